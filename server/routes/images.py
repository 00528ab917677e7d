"""``POST /v1/images``: upload a shopper's photo (multipart field ``file``) and get an ``image_id``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.datastructures import UploadFile

from assistant.runtime.uploads import MAX_UPLOAD_BYTES, ImageRejected
from server.deps import StateDep
from server.security import PrincipalDep

router = APIRouter(prefix="/v1", tags=["images"])

_MULTIPART_OVERHEAD = 64 * 1024
_CHUNK = 256 * 1024


@router.post("/images", status_code=201)
async def upload_image(request: Request, state: StateDep, caller: PrincipalDep) -> dict[str, Any]:
    """Validate and store a JPEG/PNG/WebP photo; 413 over 10 MB or 50 MP, 415 for other formats, 400 if corrupt or without a ``file`` field."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPLOAD_BYTES + _MULTIPART_OVERHEAD:
        raise HTTPException(413, detail=f"upload larger than {MAX_UPLOAD_BYTES} bytes")
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, detail={"code": "missing_file",
                                             "message": "multipart field 'file' with the image is required"})
        data = bytearray()
        while chunk := await upload.read(_CHUNK):
            data.extend(chunk)
            if len(data) > MAX_UPLOAD_BYTES:
                raise HTTPException(413, detail=f"upload larger than {MAX_UPLOAD_BYTES} bytes")
    finally:
        await form.close()
    try:
        image_id = await asyncio.to_thread(state.images.put, bytes(data))
    except ImageRejected as err:
        raise HTTPException(err.status, detail={"code": err.code, "message": err.message}) from err
    return {"image_id": image_id}
