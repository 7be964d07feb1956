"""The REST API: FastAPI routes served by uvicorn on the node's own event loop."""
