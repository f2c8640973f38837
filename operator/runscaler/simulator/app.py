"""The simulator's aiohttp application: every route module on one `Core`, with its middleware.

Routes: the REST API bootstrap (`restapi.py`), the Actions service (`actions.py`), the broker
(message queue and stand-in runner, `broker.py`) and the control API (`control.py`). Faults
apply first, then errors are rendered the way each surface renders them (`wire.py`).
"""

from __future__ import annotations

from aiohttp import web

from runscaler.simulator.actions import ActionsService
from runscaler.simulator.broker import Broker
from runscaler.simulator.control import Control
from runscaler.simulator.core import Core
from runscaler.simulator.faults import fault_middleware
from runscaler.simulator.restapi import RestApi
from runscaler.simulator.wire import errors_middleware

CORE_KEY = web.AppKey("core", Core)


def build_app(core: Core) -> web.Application:
    app = web.Application(middlewares=[fault_middleware(core.faults), errors_middleware])
    app[CORE_KEY] = core
    for part in (RestApi(core), ActionsService(core), Broker(core), Control(core)):
        app.add_routes(part.routes())
    return app
