"""The runtime: listener, scaler, controller, watcher, and the root task group."""
