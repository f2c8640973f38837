"""Runner backends: where runners run (Docker containers, Tart VMs). See `base.py`."""
