"""Backends: one module per wire protocol (ollama, mlx, openai_compat, anthropic) plus a scripted one."""
