"""label-image: model readers and the command."""
