"""Dependency aliases for route handlers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.engines import App


def get_state(request: Request) -> App:
    return request.app.state.shoptalk  # type: ignore[no-any-return]


StateDep = Annotated[App, Depends(get_state)]
