"""The manifest: YAML/TOML to a validated `Fleet`, with located errors and the JSON Schema."""
