// Talking to the reporter: the same typed HTTP API any client uses, with the bearer token
// the user typed in (kept in this tab's sessionStorage only).

const KEY = "tally.token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An answer other than 2xx, with the API's error body ({error: {code, message, field}}). */
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || String(status);
    this.field = error.field || null;
  }
}

function url(path, params) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, v);
  }
  return u;
}

async function call(method, path, params) {
  const response = await fetch(url(path, params), {
    method,
    headers: { Authorization: `Bearer ${token.get() || ""}`, Accept: "application/json" },
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export const get = (path, params) => call("GET", path, params);
export const post = (path, params) => call("POST", path, params);

/** A path segment (ids may hold any character). */
export const seg = (id) => encodeURIComponent(id);

/**
 * Follow a Server-Sent Events stream (``/live/events``) with the bearer token — an
 * EventSource cannot send one. Reconnects with back-off until ``stop()`` is called.
 * ``onState`` hears "live", "reconnecting" or "stopped".
 */
export function follow(path, onEvent, onState) {
  let controller = null;
  let stopped = false;
  let delay = 1000;

  function dispatch(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":") || !line) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) {
      try {
        onEvent(name, JSON.parse(data.join("\n")));
      } catch (err) {
        console.warn("live event not understood", name, err);
      }
    }
  }

  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch(url(path), {
          headers: { Authorization: `Bearer ${token.get() || ""}`, Accept: "text/event-stream" },
          signal: controller.signal,
        });
        if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        let first = true;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          if (first) {
            // The stream's first bytes come once the reporter subscribed: live from here.
            first = false;
            delay = 1000;
            onState("live");
          }
          buffer += value.replace(/\r\n?/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            dispatch(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        }
      } catch (err) {
        if (stopped) break;
        if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
          onState("refused", err);
          return;
        }
      }
      if (stopped) break;
      onState("reconnecting");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 30000);
    }
    onState("stopped");
  }

  run();
  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}
