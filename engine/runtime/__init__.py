"""The engine's moving parts: dispatcher (per-user order), conversation step, outbox sender."""
