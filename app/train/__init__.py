"""The Train tab: its layout and handlers (`tab`), the training form (`spec_form`), and the panels beside it
(memory verdict, plan, presets and code)."""
