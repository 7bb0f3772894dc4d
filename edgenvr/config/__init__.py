"""The TOML configuration: its model, validation with key paths, writing it back."""
