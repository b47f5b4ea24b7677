"""Adding querylog to your own FastAPI app: each request to /ask becomes a tracked query in the event log."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import BaseModel

from querylog.config import Settings
from querylog.logging.tracker import QueryTracker
from querylog.runtime import Runtime
from querylog.service.app import query_tracker


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    with Runtime(Settings.from_env()) as runtime:  # opens the log, starts the projections; drains them on exit
        app.state.querylog = runtime  # where the `query_tracker` dependency finds the tracker
        yield


app = FastAPI(lifespan=lifespan)


class Ask(BaseModel):
    question: str
    session_id: str | None = None
    user_id: str | None = None


@app.post("/ask")
def ask(body: Ask, tracker: Annotated[QueryTracker, Depends(query_tracker)]) -> dict[str, str]:
    with tracker.query(body.question, session_id=body.session_id, user_id=body.user_id) as q:
        with q.stage("search"):
            docs = ["doc-1", "doc-2"]  # your retrieval
            q.searched(len(docs))
        with q.stage("generate"):
            answer = f"{len(docs)} documents match."  # your LLM call
            q.responded(model="my-model", input_tokens=12, output_tokens=4)
    return {"query_id": q.query_id, "answer": answer}
