"""runscaler: auto-scaled ephemeral GitHub Actions runners from a git-committed fleet manifest."""

__version__ = "0.1.0.dev0"
