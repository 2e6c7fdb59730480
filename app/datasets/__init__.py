"""The Datasets tab: its layout and handlers (`tab`) and the loss-mask view of a row (`loss_view`)."""
