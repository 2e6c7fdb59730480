"""Compare chat: what a request is (panes, conversations, generation settings) and the engine that answers all
panes in one batched generate on a shared 4-bit base (torch only in `engine`)."""
