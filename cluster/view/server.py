"""The ``rlfarm view`` web server: one page at ``/`` and the run's data as JSON under ``/api``.

    GET /api/run                      name, config, live or finished, summary, ledger fates
    GET /api/metrics                  every metrics row (one per learner update)
    GET /api/eval                     the periodic evaluations (held-out and training tasks)
    GET /api/episodes?task=&tier=&version=&fate=&limit=&offset=
                                      logged episodes, newest first, without their turns,
                                      with the values each filter can take
    GET /api/episodes/{group}/{index} one episode, turn by turn
    GET /api/compare?task=&a=&b=      one task's episodes under adapter versions a and b

It only reads the run directory, binds 127.0.0.1 unless told otherwise, and the page loads
nothing from the internet (its script and charts are inline).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

from cluster.view.run_data import EpisodeFilter, RunData


def build_app(run_dir: Path) -> FastAPI:
    data = RunData.open(run_dir)
    page = files("cluster.view").joinpath("page.html").read_text(encoding="utf-8")
    app = FastAPI(title=f"rlfarm view: {data.run_dir.name}", docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/run")
    def run() -> dict:
        return data.run()

    @app.get("/api/metrics")
    def metrics() -> list[dict]:
        return data.metrics()

    @app.get("/api/eval")
    def evals() -> list[dict]:
        return data.evals()

    @app.get("/api/episodes")
    def episodes(
        task: str | None = None,
        tier: str | None = None,
        version: int | None = None,
        fate: str | None = None,
        limit: int = Query(default=100, ge=1, le=1000),
        offset: int = Query(default=0, ge=0),
    ) -> dict:
        return data.find(EpisodeFilter(task or None, tier or None, version, fate or None),
                         limit, offset)  # fmt: skip

    @app.get("/api/episodes/{group_id}/{index}")
    def episode(group_id: str, index: int) -> dict:
        found = data.episode(group_id, index)
        if found is None:
            raise HTTPException(404, f"no logged episode {group_id}/{index}")
        return found

    @app.get("/api/compare")
    def compare(task: str, a: int, b: int) -> dict:
        return data.compare(task, a, b)

    return app


def resolve_run(run: str) -> Path:
    """``--run`` as a directory, or as a run name under ./runs."""
    path = Path(run)
    if path.is_dir() or path.is_absolute() or "/" in run:
        return path
    return Path("runs") / run


def serve(run_dir: Path, host: str, port: int) -> None:
    import uvicorn

    app = build_app(run_dir)
    print(f"rlfarm view: {run_dir.resolve()} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
