"""The only package that talks HTTP to GitHub: the runner scale set API client.

`ScaleSetClient` (client.py) covers the REST endpoints, `MessageSession` (session.py) the
message queue; errors (errors.py) and data (models.py) are plain values. See protocol.md.
"""
