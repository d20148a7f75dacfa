"""Site configuration: frozen attrs classes (model) and the strict TOML loader (loader)."""
