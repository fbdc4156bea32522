"""The example project's own Python: its flow actions (`shop.actions`), named in config.toml's [actions]."""
