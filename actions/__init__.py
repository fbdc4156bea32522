"""The project's own flow actions, named in config.toml's [actions] (docs/flow-format.md, "Actions")."""
