"""Datasets: file formats and row checks, the normalized store and its lookup, the example data, the preview.
No torch here except the preview's tokenizer, loaded on request."""
