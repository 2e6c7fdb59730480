"""Base models: naming and resolving them (hub, local, the offline demo), reading their layers without loading
weights, and loading them quantized (torch only in `loading`)."""
