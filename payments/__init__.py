"""Payments: the HTTP client the checkout activities use, and a sandbox provider that ships with us.

The client (``payments.client``) needs only httpx and pydantic; the sandbox (``payments.sandbox``) and its
runner (``payments.server``) pull in FastAPI, uvicorn and SQLAlchemy, so importing the client never
loads them.
"""
