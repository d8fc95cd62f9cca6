"""The search service: the FastAPI app (`hetsearch.serve.app.create_app`), loading with the contract
check (`hetsearch.serve.server.load_service`) and the uvicorn runner (`hetsearch.serve.server.run_server`).

This package imports none of them, so that `hetsearch --help` (which imports `hetsearch.serve.cli`)
stays fast; import them from their modules.
"""
