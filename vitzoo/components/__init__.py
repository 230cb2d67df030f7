"""Component interfaces and the default implementations the ViT base is built from."""
