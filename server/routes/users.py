"""Users and the social graph: friends, consent to memory across sessions, and a user's own events.

These feed ranking and replies ("your friend Ana bought this in black").  With auth on, only the user themself (a
session token minted for that ``user_id``) or the merchant (API key) may read or change a user's data.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from assistant.core.errors import InvalidInputError
from assistant.memory.store import MAX_FRIENDS, Friend, MemoryStore
from server.deps import StateDep
from server.security import PrincipalDep


def _same_user(user_id: str, caller: PrincipalDep) -> None:
    if not caller.may_act_for(user_id):
        raise HTTPException(403, detail={"code": "forbidden",
                                         "message": "a user's data is theirs: use a token minted for this user"})


router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[Depends(_same_user)])


class FriendIn(BaseModel):
    id: str = Field(min_length=1, max_length=128)
    name: str = Field("", max_length=64)


class FriendsBody(BaseModel):
    friends: list[FriendIn] = Field(max_length=MAX_FRIENDS)


class ConsentBody(BaseModel):
    consent: bool


class EventBody(BaseModel):
    product_id: str = Field(min_length=1, max_length=128)
    action: Literal["click", "like", "add_to_cart", "purchase", "dislike"]


def _memory(state: Any) -> MemoryStore:
    if state.memory is None:
        raise HTTPException(503, detail="this server runs without memory")
    return state.memory  # type: ignore[no-any-return]


def _bad(err: InvalidInputError) -> HTTPException:
    """A semantic refusal (own friend, duplicate friend, bad id): 400 with a coded body, not FastAPI's 422 shape."""
    return HTTPException(400, detail={"code": err.code, "message": err.message})


@router.put("/{user_id}/friends")
async def put_friends(user_id: str, body: FriendsBody, state: StateDep) -> dict[str, Any]:
    memory = _memory(state)
    try:
        memory.set_friends(user_id, [Friend(f.id, f.name) for f in body.friends])
        return {"user_id": user_id, "friends": [f.__dict__ for f in memory.friends(user_id)]}
    except InvalidInputError as err:
        raise _bad(err) from err


@router.get("/{user_id}/friends")
async def get_friends(user_id: str, state: StateDep) -> dict[str, Any]:
    try:
        return {"user_id": user_id, "friends": [f.__dict__ for f in _memory(state).friends(user_id)]}
    except InvalidInputError as err:
        raise _bad(err) from err


@router.put("/{user_id}/consent")
async def put_consent(user_id: str, body: ConsentBody, state: StateDep) -> dict[str, Any]:
    try:
        _memory(state).set_consent(user_id, body.consent)
    except InvalidInputError as err:
        raise _bad(err) from err
    return {"user_id": user_id, "consent": body.consent}


@router.post("/{user_id}/events", status_code=201)
async def post_event(user_id: str, body: EventBody, state: StateDep) -> dict[str, Any]:
    if state.catalog.get(body.product_id) is None:
        raise HTTPException(404, detail=f"product {body.product_id!r} not found")
    try:
        _memory(state).record_user_event(user_id, body.product_id, body.action)
    except InvalidInputError as err:
        raise _bad(err) from err
    return {"user_id": user_id, "product_id": body.product_id, "action": body.action}
