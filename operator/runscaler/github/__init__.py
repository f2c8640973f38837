"""The only package that talks HTTP to GitHub: the runner scale set API client."""
