"""Dedicated inference workers fed through Redis Streams.

`protocol` names the keys and (de)serialises requests and events, `worker` is
the process that serves one model on one device, `backend` is what the API
process uses to reach the workers (the same interface as the in-process
backend in `inference.dispatch`), and `stream` reads one request's event stream
for it.
"""
