"""A protocol-faithful GitHub + Actions service for tests, demos and benchmarks (simulator.md).

Served over real HTTP on loopback by `server.serve_simulator()` or `runscaler simulator`:

- `state.py`    the pure state machine (scale sets, sessions, runners, jobs, the clock);
- `restapi.py`  the REST bootstrap: registration token, App token, runner registration;
- `actions.py`  the Actions service endpoints (scale sets, sessions, JIT configs, agents);
- `broker.py`   the message queue, and the endpoints the stand-in runner speaks;
- `control.py`  `/_sim/...`: enqueue jobs, read the state, faults, expiry, deletion;
- `runner/`     the stand-in runner (`run.sh`) and its FROM-scratch busybox image.
"""
