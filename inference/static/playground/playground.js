// The playground: a conversation kept in the page, sent whole each turn over the WebSocket; answers stream in.
document.addEventListener("DOMContentLoaded", () => {
  "use strict";
  const form = document.getElementById("pg-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const model = $("pg-model"), system = $("pg-system"), temperature = $("pg-temperature");
  const maxTokens = $("pg-max-tokens"), input = $("pg-message"), send = $("pg-send"), stop = $("pg-stop");
  const transcript = $("pg-transcript"), errorBox = $("pg-error"), status = $("pg-status");
  const save = $("pg-save"), saved = $("pg-saved"), link = $("pg-session-link"), reconnect = $("pg-reconnect");
  const fieldErrors = ["pg-model", "pg-system", "pg-temperature", "pg-max-tokens", "pg-message"];

  let socket = null;
  let ready = false;
  let conversation = []; // {role, content} of the finished turns, without the system prompt
  let turn = null; // the turn being answered: {element, text, user, answer}

  const setStatus = (text) => { status.textContent = text; };
  const refresh = () => {
    const busy = turn !== null;
    send.disabled = !ready || busy || !model.value;
    stop.disabled = !busy;
    save.disabled = !ready || busy || conversation.length === 0;
  };

  // Errors: one line above the message box, and the field the error's `param` names.
  function clearErrors() {
    errorBox.hidden = true;
    errorBox.textContent = "";
    for (const id of fieldErrors) {
      const list = $(id + "-error");
      list.hidden = true;
      list.textContent = "";
      $(id).removeAttribute("aria-invalid");
    }
  }
  function fieldFor(param) {
    if (!param) return null;
    if (param === "model") return "pg-model";
    if (param === "temperature") return "pg-temperature";
    if (param === "max_tokens" || param === "max_completion_tokens") return "pg-max-tokens";
    if (param.startsWith("messages")) {
      return system.value.trim() && param.startsWith("messages[0]") ? "pg-system" : "pg-message";
    }
    return null;
  }
  function showError(error) {
    let text = error.message;
    if (error.param) text += " (parameter: " + error.param + ")";
    if (error.retry_after) text += " Retry in " + error.retry_after + " s.";
    errorBox.textContent = text;
    errorBox.dataset.code = error.code || "";
    errorBox.hidden = false;
    const field = fieldFor(error.param);
    if (field) {
      const list = $(field + "-error");
      const item = document.createElement("li");
      item.textContent = error.message;
      list.replaceChildren(item);
      list.hidden = false;
      $(field).setAttribute("aria-invalid", "true");
    }
  }

  function bubble(role, text) {
    const wrap = document.createElement("div");
    wrap.className = "pg-msg pg-" + role;
    wrap.dataset.testid = role + "-message";
    const who = document.createElement("span");
    who.className = "pg-role";
    who.textContent = role === "user" ? "You" : "Assistant";
    const body = document.createElement("div");
    body.className = "pg-text";
    body.dataset.testid = role + "-text";
    body.textContent = text;
    wrap.append(who, body);
    return wrap;
  }

  function number(field) {
    const raw = field.value.trim();
    if (raw === "") return undefined;
    const value = Number(raw);
    return Number.isFinite(value) ? value : raw; // the server names what is wrong with it
  }

  function startTurn(event) {
    event.preventDefault();
    if (!ready || turn) return;
    clearErrors();
    const content = input.value;
    const messages = [];
    if (system.value.trim()) messages.push({ role: "system", content: system.value });
    messages.push(...conversation, { role: "user", content });
    const request = { type: "chat", model: model.value, messages };
    const t = number(temperature), m = number(maxTokens);
    if (t !== undefined) request.temperature = t;
    if (m !== undefined) request.max_tokens = m;
    $("pg-empty")?.remove();
    const element = document.createElement("div");
    element.className = "pg-turn";
    element.dataset.testid = "turn";
    element.dataset.state = "waiting";
    const answer = bubble("assistant", "");
    element.append(bubble("user", content), answer);
    transcript.append(element);
    turn = { element, user: content, text: answer.querySelector(".pg-text"), answer: "" };
    input.value = "";
    saved.hidden = true;
    socket.send(JSON.stringify(request));
    refresh();
  }

  function usageLine(message) {
    const line = document.createElement("p");
    line.className = "pg-usage muted";
    line.dataset.testid = "turn-usage";
    const u = message.usage;
    line.dataset.promptTokens = u.prompt_tokens;
    line.dataset.completionTokens = u.completion_tokens;
    const cached = u.prompt_tokens_details ? u.prompt_tokens_details.cached_tokens : 0;
    line.dataset.cachedTokens = cached;
    line.dataset.costMicro = message.cost_micro ?? "";
    let text = u.prompt_tokens + " prompt";
    if (cached) text += " (" + cached + " cached)";
    text += " + " + u.completion_tokens + " completion tokens";
    text += message.cost_usd !== null ? " · cost " + message.cost_usd + " USD" : " · cost not settled yet";
    if (message.finish_reason === "cancelled") text += " · stopped";
    if (message.finish_reason === "length") text += " · cut at max tokens";
    line.textContent = text;
    return line;
  }

  function endTurn(message) {
    const current = turn;
    turn = null;
    if (message.type === "done") {
      current.element.append(usageLine(message));
      if (message.available_usd) $("pg-available").textContent = message.available_usd;
    }
    if (current.discarded) return refresh(); // "New conversation" was asked for while it ran
    const failed = message.type === "error" || message.error;
    if (failed) {
      showError(message.error);
      if (!input.value) input.value = current.user; // the turn is not part of the conversation: try again
      if (message.type === "error" && !current.answer) current.element.remove();
      else current.element.dataset.state = "failed";
    } else {
      current.element.dataset.state = message.finish_reason;
      conversation.push({ role: "user", content: current.user }, { role: "assistant", content: current.answer });
    }
    refresh();
  }

  function onMessage(event) {
    const message = JSON.parse(event.data);
    if (message.type === "ready") {
      ready = true;
      setStatus("Connected · spending " + message.organization + "'s credit");
    } else if (message.type === "start" && turn) {
      turn.element.dataset.state = "streaming";
      turn.element.dataset.requestId = message.request_id;
    } else if (message.type === "delta" && turn) {
      turn.answer += message.text;
      turn.text.textContent = turn.answer;
      transcript.scrollTop = transcript.scrollHeight; // follows the answer without moving the page
    } else if ((message.type === "done" || message.type === "error") && turn && !message.action) {
      endTurn(message);
    } else if (message.type === "saved") {
      link.href = message.url;
      link.textContent = message.title || message.session_id;
      saved.hidden = false;
    } else if (message.type === "error") {
      showError(message.error);
    }
    refresh();
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + form.dataset.wsPath);
    reconnect.hidden = true;
    setStatus("Connecting…");
    socket.addEventListener("message", onMessage);
    socket.addEventListener("close", (event) => {
      ready = false;
      if (turn) endTurn({ type: "error", error: { message: "The connection closed before the answer ended." } });
      if (event.code === 4401 || event.code === 4403) {
        setStatus(event.reason || "The playground is not available to you.");
      } else {
        setStatus("Disconnected.");
        reconnect.hidden = false;
      }
      refresh();
    });
  }

  form.addEventListener("submit", startTurn);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  stop.addEventListener("click", () => {
    if (turn && socket) socket.send(JSON.stringify({ type: "stop" }));
  });
  save.addEventListener("click", () => {
    clearErrors();
    const messages = system.value.trim() ? [{ role: "system", content: system.value }] : [];
    socket.send(JSON.stringify({ type: "save", model: model.value, messages: messages.concat(conversation) }));
  });
  $("pg-clear").addEventListener("click", () => {
    if (turn && socket) {
      socket.send(JSON.stringify({ type: "stop" }));
      turn.discarded = true;
    }
    conversation = [];
    transcript.replaceChildren();
    saved.hidden = true;
    clearErrors();
    refresh();
  });
  const price = $("pg-model-price");
  const showPrice = () => { price.textContent = model.selectedOptions[0]?.dataset.price || ""; };
  model.addEventListener("change", () => {
    const preset = model.selectedOptions[0]?.dataset.temperature;
    if (preset !== undefined) temperature.value = preset;
    showPrice();
  });
  showPrice();
  reconnect.addEventListener("click", connect);
  connect();
  refresh();
});
