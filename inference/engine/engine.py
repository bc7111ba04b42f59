"""The continuous-batching engine: one background thread running schedule → run → sample.

Callers submit and cancel from any thread; those land in an inbox the engine
thread drains between steps, so every piece of engine state is touched by one
thread only. Requests join and leave the running batch at every step.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable

from .config import EngineConfig
from .detokenizer import IncrementalDetokenizer
from .grammar import GrammarCompiler
from .grammar_rules import ERROR_INVALID_GRAMMAR, GrammarError, InvalidGrammar
from .model_runner import ModelRunner
from .outputs import Choice, RequestState
from .sampler import Sampler, SamplingRow
from .scheduler import Scheduler
from .sequence import Sequence
from .tokenizer import ChatTokenizer
from .types import (FINISH_CANCELLED, FINISH_ERROR, FINISH_LENGTH, FINISH_STOP, GenerationRequest, SamplingParams,
                    TokenEvent, TokenLogprob)

log = logging.getLogger(__name__)

EventCallback = Callable[[TokenEvent], None]
COMPILE_POLL_S = 1.0  # how often an idle engine looks whether its decode step's background compile is done


class Engine:
    def __init__(self, model_path: str, *, device: str = "cpu", dtype: str = "auto", quantization: str = "auto",
                 attention_backend: str = "auto", enforce_eager: bool = False, gpu_memory_utilization: float = 0.9,
                 config: EngineConfig | None = None, compile_in_background: bool = False) -> None:
        """dtype: auto | bfloat16 | float16 | float32 (precision.py says what auto picks);
        quantization: auto | none | int8 (weight-only); attention_backend: auto | flex | inductor | sdpa;
        enforce_eager: no CUDA graphs, no compiled CPU decode step; gpu_memory_utilization: share of the GPU this engine may fill
        (the KV cache gets what the weights and a profiling step leave); compile_in_background: when torch's compile
        cache lacks the compiled CPU decode step, serve with eager decode steps while a child process compiles it
        (background_compile.py), rather than compile it before start-up ends."""
        self.tokenizer = ChatTokenizer.from_pretrained(model_path)
        self.config = config or EngineConfig()
        window = self.tokenizer.context_window
        if self.config.max_model_len is not None and self.config.max_model_len > window:
            raise ValueError(f"max_model_len {self.config.max_model_len} is longer than the context window of the "
                             f"model in {model_path} ({window} tokens)")
        self.config.max_model_len = self.config.max_model_len or window
        self._cond = threading.Condition()
        self._started = self._stopping = False
        self._loaded, self._ready = threading.Event(), threading.Event()  # runner built; engine built
        # Every torch call happens on this one thread, model loading and warm-up included:
        # OpenMP keeps a thread team per calling thread, and a second team on the same cores
        # made each CPU decode step about 40% slower.
        loaded: dict = {}
        self._thread = threading.Thread(target=self._main, name="inference-engine", daemon=True, args=(loaded, lambda: (
            ModelRunner(model_path, self.config, device=device, dtype=dtype, quantization=quantization,
                        attention_backend=attention_backend, enforce_eager=enforce_eager,
                        gpu_memory_utilization=gpu_memory_utilization, max_positions=self.config.max_model_len,
                        compile_in_background=compile_in_background))))
        self._thread.start()
        self._loaded.wait()
        if "error" in loaded:
            raise loaded["error"]
        self.runner: ModelRunner = loaded["runner"]
        try:
            self._setup(device)
        except BaseException:
            with self._cond:
                self._stopping = True
            self._ready.set()  # the thread sees _stopping and ends without touching the engine
            raise

    def _setup(self, device: str) -> None:
        if self.runner.sliding_window and self.runner.sliding_window < self.config.max_model_len:
            log.warning("context window capped at the model's sliding window of %d tokens", self.runner.sliding_window)
            self.config.max_model_len = self.runner.sliding_window
        # A sequence of the full window must fit the cache alone, or it could never finish.
        fits = self.config.num_blocks * self.config.block_size
        if fits < self.config.max_model_len:
            log.warning("KV cache holds %d tokens: context window lowered from %d", fits, self.config.max_model_len)
            self.config.max_model_len = fits
        self.tokenizer.context_window = self.config.max_model_len
        self.scheduler = Scheduler(self.config)
        self.sampler = Sampler(self.runner.vocab_size, device=device)
        self._inbox: deque = deque()
        self._requests: dict[str, RequestState] = {}
        self._choices: dict[int, tuple[RequestState, Choice]] = {}  # seq_id ->
        self._grammar: GrammarCompiler | None = None  # built on the first constrained request
        self._grammar_lock = threading.Lock()
        self.generated_tokens = 0  # since start, every choice's tokens
        self.steps = 0
        self._busy_since: float | None = None  # time.monotonic() when the step (or graph load) under way began
        self._ready.set()

    # -- any thread ---------------------------------------------------------

    def stats(self) -> dict:
        """A snapshot for metrics: plain ints read without locking (each read is atomic; they may be a step apart)."""
        sched = self.scheduler
        bm = sched.block_manager
        return {"running": sched.num_running, "waiting": sched.num_waiting + len(self._inbox),
                "kv_blocks_total": bm.num_blocks, "kv_blocks_free": bm.num_free_blocks,
                "kv_block_size": bm.block_size, "prefix_queried_tokens": bm.queried_tokens,
                "prefix_hit_tokens": bm.hit_tokens, "preemptions": sched.num_preemptions,
                "generated_tokens": self.generated_tokens, "steps": self.steps,
                "compiling": int(self.runner.pending_compile is not None)}

    def stalled_for(self) -> float:
        """Seconds the step under way has been running (0 between steps): what tells a hung model or device (a
        worker's --stall-timeout, the embedded server's /livez) from a busy one."""
        since = self._busy_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def thread_stack(self) -> str:
        """Where the engine's thread is now, as a traceback (for the log of a stalled engine)."""
        frame = sys._current_frames().get(self._thread.ident)
        return "".join(traceback.format_stack(frame)) if frame is not None else "(the engine thread has ended)"

    def start(self) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("engine has been shut down")
            self._started = True
            self._cond.notify_all()

    def warm_up(self, timeout: float | None = 600.0) -> None:
        """Run short requests through every stage a first request meets (its chat rendered and tokenized, a prefill,
        decodes of a batch of two, greedy and sampled choices with logprobs, detokenizing), so that what loads or
        compiles lazily on the first steps has done so before any caller waits. Call it after start(); raises
        RuntimeError when they do not end cleanly within `timeout` seconds."""
        import uuid

        prompt = self.tokenizer.encode_chat([{"role": "user", "content": "Hello!"}])
        salt = f"warm-up-{uuid.uuid4().hex}"  # its cache blocks are nobody's prefix
        requests = [
            GenerationRequest(f"{salt}-greedy", prompt, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True),
                              cache_salt=salt),
            GenerationRequest(f"{salt}-sampled", prompt, SamplingParams(max_tokens=4, temperature=0.7, top_p=0.9,
                                                                        top_k=40, seed=0, logprobs=1, ignore_eos=True),
                              cache_salt=salt),
        ]
        finals: list[TokenEvent] = []
        done = threading.Event()

        def on_event(event: TokenEvent) -> None:
            if event.finished:
                finals.append(event)
                if len(finals) == len(requests):
                    done.set()

        for request in requests:
            self.submit(request, on_event)
        if not done.wait(timeout):
            for request in requests:
                self.cancel(request.request_id)
            raise RuntimeError(f"the warm-up requests did not finish in {timeout} s")
        failed = [event.error or event.finish_reason for event in finals if event.finish_reason not in
                  (FINISH_STOP, FINISH_LENGTH)]
        if failed:
            raise RuntimeError(f"a warm-up request failed: {failed[0]}")

    def prepare(self, request: GenerationRequest) -> None:
        """Compile request.constraint into request.token_mask_factory (no-op without one).

        Blocks on a cache miss, for up to config.grammar_compile_timeout_s when
        set: call it in a worker thread, never on an event loop. A constraint that does not compile
        makes submit() end the request with error_code "invalid_grammar".
        """
        if request.constraint is None or request.token_mask_factory is not None:
            return
        try:
            request.token_mask_factory = self.grammar_compiler().mask_factory(request.constraint)
        except GrammarError as exc:
            request.token_mask_factory = InvalidGrammar(str(exc))
        except Exception as exc:
            log.exception("compiling the constraint of %s failed", request.request_id)
            request.token_mask_factory = InvalidGrammar(f"the constraint could not be compiled: {exc}")

    def grammar_compiler(self) -> GrammarCompiler:
        with self._grammar_lock:
            if self._grammar is None:
                self._grammar = GrammarCompiler.for_tokenizer(
                    self.tokenizer, self.runner.vocab_size, compile_timeout_s=self.config.grammar_compile_timeout_s)
            return self._grammar

    def submit(self, request: GenerationRequest, on_event: EventCallback) -> None:
        """Queue a request; its events go to on_event from the engine thread.

        A request with a constraint not yet prepared is prepared here, in the caller's thread.
        """
        self.prepare(request)
        with self._cond:
            if self._stopping:
                raise RuntimeError("engine has been shut down")
            self._inbox.append(("submit", request, on_event))
            self._cond.notify()

    def cancel(self, request_id: str) -> None:
        with self._cond:
            self._inbox.append(("cancel", request_id, None))
            self._cond.notify()

    def shutdown(self, timeout: float | None = None) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        grammar = getattr(self, "_grammar", None)
        if grammar is not None:
            grammar.close()  # its compile process, if any

    # -- engine thread --------------------------------------------------------

    def _main(self, loaded: dict, build) -> None:
        try:
            loaded["runner"] = build()
        except BaseException as exc:  # raised again by __init__, in the caller's thread
            loaded["error"] = exc
            self._loaded.set()
            return
        self._loaded.set()
        with self._cond:
            while not self._started and not self._stopping:
                self._cond.wait()
        self._ready.wait()  # the rest of __init__, or its failure (then _stopping is set)
        if not hasattr(self, "_inbox"):
            loaded["runner"].stop_compile()
            return
        self._loop()

    def _loop(self) -> None:
        compiling = self.runner.poll_compile()
        while True:
            with self._cond:
                while not self._inbox and not self._stopping and not self.scheduler.has_unfinished:
                    if not compiling:
                        self._cond.wait()
                    elif not self._cond.wait(COMPILE_POLL_S):
                        break  # idle: see whether the background compile is done
                stopping = self._stopping
            if stopping:
                self.runner.stop_compile()
                self._drain_inbox()
                break
            if compiling:
                self._busy_since = time.monotonic()
                compiling = self.runner.poll_compile()  # once done, its graphs load here between two steps
                self._busy_since = None
            self._drain_inbox()
            if self.scheduler.has_unfinished:
                self._busy_since = time.monotonic()
                try:
                    self._step()
                except Exception as exc:  # the model or the device failed: end what was running, keep serving
                    log.exception("engine step failed")
                    self._fail_all(f"{type(exc).__name__}: {exc}")
                finally:
                    self._busy_since = None
        self._cancel_all()

    def _drain_inbox(self) -> None:
        while True:
            with self._cond:
                if not self._inbox:
                    return
                kind, payload, on_event = self._inbox.popleft()
            if kind == "submit":
                self._admit(payload, on_event)
            else:
                self._cancel(payload)

    def _admit(self, request: GenerationRequest, on_event: EventCallback) -> None:
        state = RequestState(request, on_event)
        prompts, params = request.prompts, request.params
        if request.request_id in self._requests:
            return self._close(state, FINISH_ERROR, f"duplicate request id {request.request_id}")
        if isinstance(request.token_mask_factory, InvalidGrammar):
            return self._close(state, FINISH_ERROR, request.token_mask_factory.message, ERROR_INVALID_GRAMMAR)
        for prompt in prompts:
            if not prompt:
                return self._close(state, FINISH_ERROR, "prompt_token_ids is empty")
            if any(not 0 <= t < self.runner.vocab_size for t in prompt):
                return self._close(state, FINISH_ERROR,
                                   f"prompt token id outside the vocabulary of {self.runner.vocab_size}")
        if params.max_tokens == 0 and params.prompt_logprobs is None:
            return self._close(state, FINISH_LENGTH)
        window = self.config.max_model_len
        if any(len(p) > window or (len(p) == window and params.max_tokens) for p in prompts):
            return self._close(state, FINISH_LENGTH)
        if not all(self.scheduler.can_ever_fit(min(len(p) + params.max_tokens, window)) for p in prompts):
            return self._close(state, FINISH_ERROR, "the request does not fit the KV cache")
        self._requests[request.request_id] = state
        for i, prompt in enumerate(prompts):  # each prompt's first choice; the others fork from it
            choice = self._add_choice(state, Sequence(request.request_id, prompt, params, index=i * params.n,
                                                      cache_salt=request.cache_salt))
            self.scheduler.add(choice.seq)

    def _add_choice(self, state: RequestState, seq: Sequence) -> Choice:
        params = seq.params
        # Choice j of every prompt draws as choice j of that prompt sent alone would.
        seed = None if params.seed is None else params.seed + seq.index % params.n
        factory = state.request.token_mask_factory
        choice = Choice(
            seq=seq,
            detok=IncrementalDetokenizer(self._decoder(params), params.stop, context_ids=seq.prompt_token_ids,
                                         include_stop=params.include_stop_str_in_output,
                                         native_tokenizer=self._native_tokenizer,
                                         skip_special_tokens=params.skip_special_tokens),
            generator=None if seed is None else self.sampler.make_generator(seed),
            mask=factory() if factory is not None else None,
        )
        state.choices.append(choice)
        self._choices[seq.seq_id] = (state, choice)
        return choice

    @property
    def _native_tokenizer(self):
        # The tokenizers library object behind a fast tokenizer (what the detokenizer streams with).
        return getattr(self.tokenizer.hf_tokenizer, "_tokenizer", None)

    def _decoder(self, params):
        if params.skip_special_tokens:
            return self.tokenizer.decode
        return lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False)

    def _step(self) -> None:
        output = self.scheduler.schedule()
        if output.is_empty:
            return
        logits = self.runner.run(output)  # [S, V]
        self.steps += 1
        self.scheduler.update(output)
        if self.runner.prompt_scores:
            self._take_prompt_scores(self.runner.prompt_scores)
        changed: dict[str, tuple[RequestState, list[Choice]]] = {}
        targets, rows, logit_rows = [], [], []
        for i, item in enumerate(s for s in output.scheduled if s.samples):
            state, choice = self._choices[item.seq.seq_id]
            if item.seq.params.max_tokens == 0:  # a prompt scored (prompt_logprobs), nothing generated
                self._finish(choice, FINISH_LENGTH)
                changed.setdefault(state.request_id, (state, []))[1].append(choice)
                continue
            group = [choice]
            if item.seq.params.n > 1 and item.seq.first_of_prompt and item.seq.num_output_tokens == 0:
                group += self._fork(state, choice)
            for c in group:
                targets.append((state, c))
                # The sequence's own lists, not copies: a step costs nothing per token held.
                rows.append(SamplingRow(c.seq.params, c.seq.prompt_token_ids, c.seq.output_token_ids,
                                        c.generator, self.tokenizer.eos_token_ids, c.mask))
                logit_rows.append(i)
        if rows:
            if len(logit_rows) != logits.shape[0]:
                logits = logits[logit_rows]  # forked choices sample from their parent's logits
            results = self.sampler(logits, rows)
            for (state, choice), result in zip(targets, results):
                self._accept(state, choice, result)
                changed.setdefault(state.request_id, (state, []))[1].append(choice)
        for state, choices in changed.values():
            self._publish(state, choices)

    def _take_prompt_scores(self, scores: dict) -> None:
        """Queue the prompt logprobs a step computed for the next event of their request. A prompt's special tokens
        (its chat template's markup) keep their text."""
        def piece(ids):
            return self.tokenizer.decode(ids, skip_special_tokens=False)
        for seq_id, computed in scores.items():
            entry = self._choices.get(seq_id)
            if entry is None:
                continue  # cancelled while the step ran
            choice = entry[1]
            choice.seq.num_prompt_logprobs += len(computed)
            choice.prompt_logprobs.extend(
                TokenLogprob(token_id=s.token_id, token=piece([s.token_id]), logprob=s.logprob, rank=s.rank,
                             top=tuple((t, piece([t]), lp) for t, lp in s.top)) for s in computed)

    def _fork(self, state: RequestState, parent: Choice) -> list[Choice]:
        children = []
        for index in range(parent.seq.index + 1, parent.seq.index + parent.seq.params.n):
            child = Sequence(state.request_id, list(parent.seq.prompt_token_ids), parent.seq.params, index=index,
                             cache_salt=parent.seq.cache_salt)
            self.scheduler.fork(parent.seq, child)
            children.append(self._add_choice(state, child))
        return children

    def _accept(self, state: RequestState, choice: Choice, result) -> None:
        seq, params = choice.seq, choice.seq.params
        token = result.token_id
        seq.append_token(token)
        state.completion_tokens += 1
        self.generated_tokens += 1
        if choice.mask is not None:
            choice.mask.accept(token)
        choice.token_ids.append(token)
        if params.logprobs is not None:
            choice.logprobs.append(self._logprob(token, result))
        if token in self.tokenizer.eos_token_ids and not params.ignore_eos:
            return self._finish(choice, FINISH_STOP)
        if token in params.stop_token_ids:
            return self._finish(choice, FINISH_STOP)
        choice.text += choice.detok.push(token)
        if choice.detok.stopped:
            return self._finish(choice, FINISH_STOP)
        if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.config.max_model_len:
            return self._finish(choice, FINISH_LENGTH)

    def _logprob(self, token: int, result) -> TokenLogprob:
        piece = self.tokenizer.decode
        return TokenLogprob(token_id=token, token=piece([token]), logprob=result.logprob,
                            top=tuple((t, piece([t]), lp) for t, lp in result.top))

    def _finish(self, choice: Choice, reason: str) -> None:
        # Text held back as a possible stop-string start was really generated.
        choice.text += choice.detok.flush()
        choice.finish_reason = reason
        self.scheduler.finish(choice.seq)
        self._choices.pop(choice.seq.seq_id, None)

    def _publish(self, state: RequestState, choices: list[Choice], error: str | None = None) -> None:
        for event in state.events(choices, error=error):
            try:
                state.on_event(event)
            except Exception:
                log.exception("on_event callback failed for request %s", state.request_id)
        if state.done:
            self._requests.pop(state.request_id, None)

    def _close(self, state: RequestState, reason: str, error: str | None = None,
               error_code: str | None = None) -> None:
        """End a request that never started."""
        state.done = True
        event = TokenEvent(request_id=state.request_id, finished=True, finish_reason=reason, error=error,
                           error_code=error_code, prompt_tokens=state.request.num_prompt_tokens)
        try:
            state.on_event(event)
        except Exception:
            log.exception("on_event callback failed for request %s", state.request_id)

    def _end_request(self, state: RequestState, reason: str, error: str | None = None) -> None:
        open_choices = [c for c in state.choices if not c.finished]
        for choice in open_choices:
            self._finish(choice, reason)
        self._publish(state, open_choices, error=error)

    def _cancel(self, request_id: str) -> None:
        # The inbox is drained in order, so a request is admitted before any cancel sent after it.
        state = self._requests.get(request_id)
        if state is not None:
            self._end_request(state, FINISH_CANCELLED)

    def _fail_all(self, error: str) -> None:
        for state in list(self._requests.values()):
            self._end_request(state, FINISH_ERROR, error)

    def _cancel_all(self) -> None:
        self._drain_cancelled_inbox()
        for state in list(self._requests.values()):
            self._end_request(state, FINISH_CANCELLED)

    def _drain_cancelled_inbox(self) -> None:
        with self._cond:
            items, self._inbox = list(self._inbox), deque()
        for kind, request, on_event in items:
            if kind == "submit":
                self._close(RequestState(request, on_event), FINISH_CANCELLED)
