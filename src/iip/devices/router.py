"""Placeholder, filled in by this context's work."""

from fastapi import APIRouter

router = APIRouter()
