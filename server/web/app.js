// ShopTalk's browser client: one websocket (PROTOCOL.md), microphone through an AudioWorklet as 16 kHz PCM16
// binary frames, reply audio with barge-in, product cards with feedback, photo lookup and a text box.
import { Player } from "./player.js";

const RESUME_KEY = "shoptalk.resume_token";
const MODE_KEY = "shoptalk.mic_mode";
const MAX_PHOTO_BYTES = 10 * 1024 * 1024;
const PHOTO_TYPES = ["image/jpeg", "image/png", "image/webp"];
const INPUT_RATE = 16000;
const FRAME_SAMPLES = 640; // 40 ms at 16 kHz
const KEEPALIVE_MS = 25000;
const MAX_RECONNECT_DELAY_MS = 10000;
// Errors the page handles itself; the shopper does not need to read them.
const QUIET_ERRORS = new Set(["response_cancel_not_active"]);
const FRIENDLY_ERRORS = {
  empty_buffer: "I didn't hear anything. Hold the button while you speak, or type below.",
  image_not_found: "That photo is no longer on the server. Please send it again.",
  rate_limited: "You're going a bit fast. Please wait a moment and try again.",
};

const $ = (id) => document.getElementById(id);
const ui = {
  connection: $("connection"),
  conversation: $("conversation"),
  hint: $("hint"),
  live: $("live"),
  alerts: $("alerts"),
  alertText: $("alert-text"),
  alertClose: $("alert-close"),
  notice: $("notice"),
  form: $("text-form"),
  message: $("message"),
  mic: $("mic"),
  level: $("level").firstElementChild,
  camera: $("photo-camera"),
  upload: $("photo-upload"),
};

const state = {
  ws: null,
  connected: false,
  everConnected: false,
  sessionId: null,
  outputRate: 24000,
  reconnectAttempts: 0,
  reconnectTimer: null,
  reconnectAfterMs: null,
  resuming: false,
  resumed: false,
  newToken: null,
  responseId: null,
  responseActive: false,
  muteAudio: false,
  bubbles: new Map(),
  mode: sessionStorage.getItem(MODE_KEY) === "ptt" ? "ptt" : "handsfree",
  micState: "off", // off | starting | on | denied | unavailable
  listening: false,
  holding: false,
  commitPending: false,
  framesSent: 0,
  bargeIns: 0,
  lastBargeIn: null,
  context: null,
  player: null,
  capture: null,
  stream: null,
  events: [],
};

// --- connection ----------------------------------------------------------------------------------------------
function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/realtime`;
}

/** A session token for this page when the server asks for one (auth on); null when it is open or unreachable. */
async function pageToken() {
  try {
    const response = await fetch("/v1/tokens/page", { method: "POST" });
    if (!response.ok) return null;
    return (await response.json()).token || null;
  } catch {
    return null; // the server is down: the websocket fails too, and the page retries
  }
}

async function connect() {
  clearTimeout(state.reconnectTimer);
  setConnection(state.everConnected ? "Reconnecting…" : "Connecting…", "connecting");
  const token = await pageToken();
  const ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  state.hadToken = Boolean(token);
  // Browsers cannot put a token in websocket headers: it goes as the first message.
  ws.onopen = () => token && ws.send(JSON.stringify({ type: "session.authenticate", token }));
  ws.onmessage = (message) => {
    if (ws !== state.ws) return;
    if (typeof message.data === "string") {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      onEvent(event);
    } else {
      onAudio(message.data);
    }
  };
  ws.onclose = (event) => onClose(ws, event);
}

function onClose(ws, event) {
  if (ws !== state.ws) return;
  state.connected = false;
  state.responseActive = false;
  pauseCapture();
  if (state.signInNeeded) {
    setConnection("Not signed in", "offline");
    return; // retrying cannot help: this shop gives tokens to signed-in shoppers only
  }
  const delay = state.reconnectAfterMs ?? Math.min(MAX_RECONNECT_DELAY_MS, 500 * 2 ** state.reconnectAttempts);
  state.reconnectAfterMs = null;
  state.reconnectAttempts += 1;
  setConnection(`Connection lost — reconnecting in ${Math.max(1, Math.round(delay / 1000))} s`, "offline");
  if (state.everConnected) {
    const why = event.reason ? ` (${event.reason})` : "";
    showAlert(`The connection to the shop dropped${why}. Reconnecting…`, "connection_lost");
  } else {
    showAlert("Can't reach the shop right now. Retrying…", "connection_failed");
  }
  state.reconnectTimer = setTimeout(connect, delay);
}

function send(event) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
  state.ws.send(JSON.stringify(event));
  return true;
}

function sessionConfig() {
  return {
    input_audio: { rate: INPUT_RATE },
    output_audio: { transport: "binary" },
    turn_detection: state.mode === "handsfree" ? { type: "server_vad" } : null,
  };
}

// --- server events -------------------------------------------------------------------------------------------
function onEvent(event) {
  state.events.push(event.type);
  if (state.events.length > 300) state.events.splice(0, 100);
  switch (event.type) {
    case "session.created": {
      const session = event.session;
      state.connected = true;
      state.reconnectAttempts = 0;
      state.sessionId = session.id;
      setOutputRate(session.output_audio?.rate);
      state.newToken = session.resume_token;
      const saved = sessionStorage.getItem(RESUME_KEY);
      const config = sessionConfig();
      if (saved && saved !== session.resume_token) {
        config.resume_token = saved;
        state.resuming = true;
      } else {
        sessionStorage.setItem(RESUME_KEY, session.resume_token);
      }
      send({ type: "session.update", session: config });
      setConnection("Connected", "online");
      if (ui.alerts.dataset.code?.startsWith("connection")) clearAlert();
      if (state.listening) startSending();
      break;
    }
    case "session.updated": {
      const session = event.session;
      state.sessionId = session.id;
      setOutputRate(session.output_audio?.rate);
      if (state.resuming) {
        state.resuming = false;
        state.resumed = true;
        sessionStorage.setItem(RESUME_KEY, session.resume_token);
        if (state.everConnected) showNotice("Reconnected — your conversation is still here.");
      }
      state.everConnected = true;
      document.body.dataset.session = state.sessionId;
      break;
    }
    case "input_audio_buffer.speech_started":
      bargeIn("speech");
      showLive("Listening…");
      break;
    case "input_audio_buffer.speech_stopped":
      showLive("…");
      break;
    case "conversation.item.input_audio_transcription.delta":
      showLive(event.transcript ?? `${ui.live.textContent === "Listening…" ? "" : ui.live.textContent}${event.delta}`);
      break;
    case "conversation.item.input_audio_transcription.completed":
      hideLive();
      if (event.transcript) addBubble("user", event.transcript, { kind: "transcript" });
      break;
    case "response.created":
      state.responseId = event.response.id;
      state.responseActive = true;
      state.muteAudio = false;
      responseBubble(event.response.id);
      break;
    case "response.output_text.delta":
      appendText(responseBubble(event.response_id), event.delta);
      break;
    case "response.products":
      renderProducts(responseBubble(event.response_id), event.products || []);
      break;
    case "response.done": {
      const response = event.response;
      if (response.id === state.responseId) state.responseActive = false;
      const bubble = state.bubbles.get(response.id);
      if (bubble) {
        bubble.dataset.status = response.status;
        if (response.status !== "completed") setMeta(bubble, response.status === "cancelled" ? "(stopped)" : "(failed)");
      }
      if (response.handoff) showNotice("I've asked a person from the shop to help you.");
      break;
    }
    case "error":
      onError(event.error || {});
      break;
    case "session.closing":
      state.reconnectAfterMs = event.reconnect_after_ms ?? 1000;
      showNotice("The shop is restarting; I'll reconnect in a moment.");
      break;
    default:
      break;
  }
}

function onError(error) {
  const code = error.code || "error";
  if (QUIET_ERRORS.has(code)) return;
  if (code === "auth_failed" && !state.hadToken) {
    state.signInNeeded = true;
    showAlert("This shop's assistant needs you to sign in first.", code);
    return;
  }
  if (code === "invalid_resume_token") {
    // The earlier session expired: go on as the new one the server created, with our settings.
    state.resuming = false;
    if (state.newToken) sessionStorage.setItem(RESUME_KEY, state.newToken);
    send({ type: "session.update", session: sessionConfig() });
    showNotice("Your earlier conversation has expired, so this is a fresh one.");
    return;
  }
  showAlert(FRIENDLY_ERRORS[code] || error.message || "Something went wrong.", code);
}

function setOutputRate(rate) {
  if (rate) state.outputRate = rate;
  if (state.player) state.player.rate = state.outputRate;
}

// --- reply audio and barge-in --------------------------------------------------------------------------------
function ensureAudio() {
  if (!state.context) {
    state.context = new AudioContext({ latencyHint: "interactive" });
    state.player = new Player(state.context, state.outputRate);
    state.player.onchange = (playing) => {
      document.body.dataset.playing = String(playing);
    };
  }
  if (state.context.state === "suspended") state.context.resume().catch(() => {});
  return state.context;
}

function onAudio(buffer) {
  if (state.muteAudio || buffer.byteLength < 2) return;
  ensureAudio();
  state.player.enqueue(buffer.byteLength % 2 ? buffer.slice(0, buffer.byteLength - 1) : buffer);
}

/** The shopper started again (speech, push-to-talk, typing, a photo): stop the reply audio at once. */
function bargeIn(reason) {
  const started = performance.now();
  const wasPlaying = state.player ? state.player.stop() : false;
  state.muteAudio = true; // audio of the interrupted reply that is still on its way is dropped
  if (wasPlaying) {
    state.bargeIns += 1;
    state.lastBargeIn = { reason, ms: performance.now() - started, at: Date.now() };
    if (state.responseActive) send({ type: "response.cancel" });
  }
  return wasPlaying;
}

// --- microphone ------------------------------------------------------------------------------------------------
async function openMic() {
  if (state.capture) return true;
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    micFailed("unavailable", "The microphone needs a secure page (HTTPS or localhost). You can still type or send a photo.");
    return false;
  }
  setMic("starting");
  try {
    const context = ensureAudio();
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    await context.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url));
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "shoptalk-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      processorOptions: { targetRate: INPUT_RATE, frameSamples: FRAME_SAMPLES },
    });
    // A silent path to the speakers keeps the worklet pulled by the audio graph.
    const sink = context.createGain();
    sink.gain.value = 0;
    source.connect(node).connect(sink).connect(context.destination);
    node.port.onmessage = (message) => onCapture(message.data);
    state.capture = { node, source, sink };
    state.stream = stream;
    stream.getAudioTracks()[0]?.addEventListener("ended", () => {
      closeMic();
      showAlert("The microphone was disconnected. Reconnect it and try again, or type below.", "mic_ended");
    });
    setMic("on");
    return true;
  } catch (err) {
    const name = err?.name || "";
    if (name === "NotAllowedError" || name === "SecurityError") {
      micFailed("denied", "Microphone access was denied. To talk, allow the microphone for this site in your " +
        "browser's settings and try again — or type your question below.");
    } else if (name === "NotFoundError" || name === "OverconstrainedError") {
      micFailed("unavailable", "No microphone was found. Connect one, or type your question below.");
    } else if (name === "NotReadableError") {
      micFailed("unavailable", "The microphone is in use by another app. Close it there, or type below.");
    } else {
      micFailed("unavailable", `The microphone could not start (${name || err}). You can type instead.`);
    }
    return false;
  }
}

function closeMic() {
  state.listening = false;
  state.holding = false;
  if (state.capture) {
    state.capture.node.port.postMessage("close");
    state.capture.source.disconnect();
    state.capture.sink.disconnect();
  }
  state.stream?.getTracks().forEach((track) => track.stop());
  state.capture = null;
  state.stream = null;
  setMic("off");
}

function micFailed(kind, text) {
  closeMic();
  setMic(kind);
  showAlert(text, kind === "denied" ? "mic_denied" : "mic_unavailable");
}

function onCapture(message) {
  if (message.type === "frame") {
    if (state.connected && state.ws?.readyState === WebSocket.OPEN) {
      state.ws.send(message.pcm);
      state.framesSent += 1;
    }
    ui.level.style.width = `${Math.min(100, Math.round(Math.sqrt(message.level) * 250))}%`;
  } else if (message.type === "flushed") {
    ui.level.style.width = "0%";
    if (state.commitPending) {
      state.commitPending = false;
      send({ type: "input_audio_buffer.commit" });
    }
  }
}

function startSending() {
  state.capture?.node.port.postMessage("start");
}

function pauseCapture() {
  state.capture?.node.port.postMessage("pause");
  ui.level.style.width = "0%";
}

async function toggleListening() {
  if (state.listening) {
    state.listening = false;
    pauseCapture();
    send({ type: "input_audio_buffer.clear" });
    hideLive();
    renderMic();
    return;
  }
  if (!(await openMic())) return;
  state.listening = true;
  startSending();
  renderMic();
}

async function pushToTalkDown() {
  if (state.holding) return;
  state.holding = true;
  renderMic();
  bargeIn("push_to_talk");
  if (!(await openMic()) || !state.holding) {
    state.holding = false;
    renderMic();
    return;
  }
  send({ type: "input_audio_buffer.clear" });
  startSending();
  showLive("Listening…");
}

function pushToTalkUp() {
  if (!state.holding) return;
  state.holding = false;
  renderMic();
  if (!state.capture) return;
  state.commitPending = true;
  state.capture.node.port.postMessage("flush");
  showLive("…");
}

function setMode(mode) {
  if (mode === state.mode) return;
  if (state.listening) toggleListening();
  if (state.holding) pushToTalkUp();
  state.mode = mode;
  sessionStorage.setItem(MODE_KEY, mode);
  send({ type: "session.update", session: { turn_detection: mode === "handsfree" ? { type: "server_vad" } : null } });
  renderMic();
}

function setMic(micState) {
  state.micState = micState;
  renderMic();
}

function renderMic() {
  document.body.dataset.mic = state.micState;
  if (state.mode === "handsfree") {
    ui.mic.textContent = state.listening ? "Stop listening" : "Start listening";
    ui.mic.setAttribute("aria-pressed", String(state.listening));
  } else {
    ui.mic.textContent = "Hold to talk";
    ui.mic.setAttribute("aria-pressed", String(state.holding));
  }
}

// --- typed messages and photos --------------------------------------------------------------------------------
function sendText(text) {
  if (!state.connected) {
    showAlert("Not connected right now — your message is still in the box; send it again once reconnected.",
      "not_connected");
    return false;
  }
  ensureAudio();
  bargeIn("typed");
  addBubble("user", text, { kind: "typed" });
  send({ type: "conversation.item.create", item: { role: "user", content: [{ type: "input_text", text }] } });
  send({ type: "response.create" });
  return true;
}

async function sendPhoto(input) {
  const file = input.files?.[0];
  input.value = ""; // the same photo can be chosen again
  if (!file) return;
  if (file.type && !PHOTO_TYPES.includes(file.type)) {
    showAlert("Photos must be JPEG, PNG or WebP. (On an iPhone, choose “Most Compatible” in Camera › Formats.)",
      "photo_type");
    return;
  }
  if (file.size > MAX_PHOTO_BYTES) {
    showAlert(`That photo is ${(file.size / 1048576).toFixed(1)} MB; the limit is 10 MB.`, "photo_too_large");
    return;
  }
  if (!state.connected) {
    showAlert("Not connected right now — send the photo again once reconnected.", "not_connected");
    return;
  }
  ensureAudio();
  bargeIn("photo");
  const words = ui.message.value.trim();
  const bubble = addBubble("user", words || "Find this", { kind: "photo", photo: URL.createObjectURL(file) });
  const form = new FormData();
  form.append("file", file, file.name || "photo.jpg");
  let response;
  let body = {};
  try {
    response = await fetch("/v1/images", { method: "POST", body: form });
    body = await response.json().catch(() => ({}));
  } catch {
    showAlert("The photo could not be sent (connection problem). Please try again.", "photo_upload_failed");
    bubble.dataset.status = "failed";
    return;
  }
  if (response.status !== 201) {
    const detail = body.detail;
    const reason = typeof detail === "string" ? detail : detail?.message || `upload refused (${response.status})`;
    showAlert(`That photo was not accepted: ${reason}`, detail?.code || "photo_rejected");
    bubble.dataset.status = "failed";
    return;
  }
  const content = [{ type: "input_image", image_id: body.image_id }];
  if (words) content.push({ type: "input_text", text: words });
  send({ type: "conversation.item.create", item: { role: "user", content } });
  send({ type: "response.create" });
  ui.message.value = "";
}

// --- conversation view ---------------------------------------------------------------------------------------
function addBubble(role, text, { kind, photo } = {}) {
  ui.hint.hidden = true;
  const bubble = document.createElement("div");
  bubble.className = `bubble ${role}`;
  if (kind) bubble.dataset.kind = kind;
  const who = document.createElement("span");
  who.className = "visually-hidden";
  who.textContent = role === "user" ? "You said: " : "ShopTalk: ";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  bubble.append(who, body);
  if (photo) {
    const img = document.createElement("img");
    img.className = "photo";
    img.src = photo;
    img.alt = "Your photo";
    bubble.append(img);
  }
  ui.conversation.append(bubble);
  bubble.scrollIntoView({ block: "end" });
  return bubble;
}

function responseBubble(id) {
  let bubble = state.bubbles.get(id);
  if (!bubble) {
    bubble = addBubble("assistant", "");
    bubble.dataset.responseId = id;
    state.bubbles.set(id, bubble);
    if (state.bubbles.size > 200) state.bubbles.delete(state.bubbles.keys().next().value);
  }
  return bubble;
}

function appendText(bubble, delta) {
  bubble.querySelector(".text").textContent += delta;
}

function setMeta(bubble, text) {
  let meta = bubble.querySelector(".meta");
  if (!meta) {
    meta = document.createElement("span");
    meta.className = "meta";
    bubble.append(" ", meta);
  }
  meta.textContent = text;
}

function formatPrice(value, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "USD" }).format(value);
  } catch {
    return `${value} ${currency || ""}`.trim();
  }
}

function renderProducts(bubble, products) {
  bubble.querySelector(".cards")?.remove();
  if (!products.length) return;
  const list = document.createElement("ul");
  list.className = "cards";
  list.setAttribute("aria-label", `${products.length} product${products.length === 1 ? "" : "s"}`);
  products.forEach((product, index) => list.append(productCard(product, index)));
  bubble.append(list);
  bubble.scrollIntoView({ block: "end" });
}

function productCard(product, index) {
  const card = document.createElement("li");
  card.className = "card";
  card.dataset.productId = product.id;
  card.dataset.price = String(product.price);
  const img = document.createElement("img");
  img.src = product.image_url;
  img.alt = product.title;
  img.loading = "lazy";
  img.addEventListener("click", () => feedback(product.id, "click"));
  const title = document.createElement("h3");
  title.textContent = `${index + 1}. ${product.title}`;
  const price = document.createElement("p");
  price.className = "price";
  price.textContent = formatPrice(product.price, product.currency);
  card.append(img, title, price);
  const missed = product.near_miss || [];
  if (missed.length) {
    // a close alternative: say plainly which of the shopper's constraints it does not meet
    card.classList.add("near");
    card.dataset.nearMiss = missed.join(" ");
    const note = document.createElement("p");
    note.className = "near-miss";
    note.textContent = `Close match: not the ${missed.join(" or ")} you asked for`;
    card.append(note);
  }
  if (product.reason) {
    const why = document.createElement("p");
    why.className = "why";
    why.textContent = `Why: ${product.reason}`;
    card.append(why);
  }
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(
    feedbackButton(product, "like", "Like", "Liked"),
    feedbackButton(product, "add_to_cart", "Add to cart", "In cart"),
  );
  card.append(actions);
  return card;
}

function feedbackButton(product, action, label, doneLabel) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.dataset.action = action;
  button.setAttribute("aria-label", `${label}: ${product.title}`);
  button.setAttribute("aria-pressed", "false");
  button.addEventListener("click", () => {
    if (!feedback(product.id, action)) return;
    button.textContent = `${doneLabel} ✓`;
    button.setAttribute("aria-pressed", "true");
    button.disabled = true;
  });
  return button;
}

function feedback(productId, action) {
  if (!send({ type: "feedback", product_id: productId, action })) {
    showAlert("Not connected right now — try again in a moment.", "not_connected");
    return false;
  }
  return true;
}

function showLive(text) {
  ui.live.hidden = false;
  ui.live.textContent = text;
}

function hideLive() {
  ui.live.hidden = true;
  ui.live.textContent = "";
}

function setConnection(text, status) {
  ui.connection.textContent = text;
  document.body.dataset.connection = status;
}

function showAlert(text, code) {
  ui.alertText.textContent = text;
  ui.alerts.dataset.code = code || "";
  ui.alerts.hidden = false;
}

function clearAlert() {
  ui.alerts.hidden = true;
  ui.alerts.dataset.code = "";
  ui.alertText.textContent = "";
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
}

// --- wiring ----------------------------------------------------------------------------------------------------
ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.message.value.trim();
  if (text && sendText(text)) ui.message.value = "";
});
ui.alertClose.addEventListener("click", clearAlert);
ui.camera.addEventListener("change", () => sendPhoto(ui.camera));
ui.upload.addEventListener("change", () => sendPhoto(ui.upload));
for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.checked = radio.value === state.mode;
  radio.addEventListener("change", () => radio.checked && setMode(radio.value));
}
ui.mic.addEventListener("click", () => {
  if (state.mode === "handsfree") toggleListening();
});
ui.mic.addEventListener("pointerdown", (event) => {
  if (state.mode !== "ptt" || event.button !== 0) return;
  ui.mic.setPointerCapture(event.pointerId);
  pushToTalkDown();
});
ui.mic.addEventListener("pointerup", () => state.mode === "ptt" && pushToTalkUp());
ui.mic.addEventListener("pointercancel", () => state.mode === "ptt" && pushToTalkUp());
ui.mic.addEventListener("keydown", (event) => {
  if (state.mode !== "ptt" || (event.key !== " " && event.key !== "Enter")) return;
  event.preventDefault();
  if (!event.repeat) pushToTalkDown();
});
ui.mic.addEventListener("keyup", (event) => {
  if (state.mode !== "ptt" || (event.key !== " " && event.key !== "Enter")) return;
  event.preventDefault();
  pushToTalkUp();
});
ui.mic.addEventListener("blur", () => state.mode === "ptt" && pushToTalkUp());
window.addEventListener("online", () => {
  if (!state.connected) connect();
});
setInterval(() => state.connected && send({ type: "keepalive" }), KEEPALIVE_MS);

// What the end-to-end tests (and a curious developer's console) can read.
window.shoptalk = {
  get state() {
    return {
      connected: state.connected,
      sessionId: state.sessionId,
      resumed: state.resumed,
      mode: state.mode,
      micState: state.micState,
      listening: state.listening,
      framesSent: state.framesSent,
      playing: Boolean(state.player?.playing),
      chunksPlayed: state.player?.chunks ?? 0,
      bargeIns: state.bargeIns,
      lastBargeIn: state.lastBargeIn,
      responseActive: state.responseActive,
      events: state.events.slice(-50),
    };
  },
};

renderMic();
connect();
