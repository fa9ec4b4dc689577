"""Serve a local model as a teacher over HTTP (the OpenAI completions protocol vLLM and SGLang speak)."""

from mentor.serve.server import TeacherServer, serve_teacher

__all__ = ["TeacherServer", "serve_teacher"]
