import threading

TIMEOUT = 30


class Collector:
    """Records one request's events and lets the test wait for its final one."""

    def __init__(self, on_event=None):
        self.events = []
        self.done = threading.Event()
        self._on_event = on_event

    def __call__(self, event):
        self.events.append(event)
        if event.finished:
            self.done.set()
        if self._on_event is not None:
            self._on_event(event)

    def wait(self):
        assert self.done.wait(TIMEOUT), "request never finished"
        return self

    @property
    def final(self):
        finals = [e for e in self.events if e.finished]
        assert len(finals) == 1, f"expected exactly one final event, got {len(finals)}"
        assert self.events[-1] is finals[0], "final event was not the last one"
        return finals[0]

    @property
    def text(self):
        return "".join(e.text for e in self.events)


def until_eos(tokens, eos_ids):
    """The tokens a request would consume: up to and including the first EOS."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: i + 1]
    return tokens


def greedy_tokens(hf_model, prompt_ids, n):
    """transformers' own greedy continuation, EOS not special: the reference for the engine."""
    import torch

    ids = torch.tensor([list(prompt_ids)])
    out = []
    with torch.inference_mode():
        for _ in range(n):
            token = int(hf_model(ids).logits[0, -1].argmax())
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out
