"""The Adapters tab: published adapters, downloads, merge, hub push (`tab`)."""
