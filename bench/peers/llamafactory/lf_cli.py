"""`llamafactory-cli` with the 4-bit weights kept in their trainable layout (the studio's own fix).

bitsandbytes 0.50 repacks a Linear4bit's weight into a CPU inference layout at its first no-grad eval on an
AVX512-BF16 CPU and never packs it back; every training step after LLaMA-Factory's in-loop eval then drops the
gradient through the frozen base. Same argv as the CLI."""

import sys

import bitsandbytes as bnb

_init = bnb.nn.Linear4bit.__init__


def _trainable_layout_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.support_avx512bf16_for_cpu = False


if __name__ == "__main__":
    bnb.nn.Linear4bit.__init__ = _trainable_layout_init
    from llamafactory.cli import main

    sys.exit(main())
