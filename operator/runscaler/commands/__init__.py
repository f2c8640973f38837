"""One module per subcommand; `runscaler.cli` lists them in the order `--help` shows."""
