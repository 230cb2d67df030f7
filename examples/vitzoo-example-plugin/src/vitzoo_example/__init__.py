"""An example third-party vitzoo plugin (see ``vitzoo_example.plugin``)."""
