// A non-Python agent reporting to Tally: publish a task, then one run of it, on NATS
// JetStream with the official `nats` package. Follows docs/events.md; the payload
// schemas are in docs/contract/schemas/.
//
//   npm ci && node publish-task-and-run.mjs
//
// Environment: NATS_URL (default nats://127.0.0.1:4222), TALLY_NAMESPACE (default none),
// TALLY_WORKSPACE (default "default"). Prints {"task_id", "run_id"} as JSON on stdout.
import { randomUUID } from "node:crypto";
import { connect, JSONCodec } from "nats";

const namespace = process.env.TALLY_NAMESPACE ?? "";
const workspace = process.env.TALLY_WORKSPACE ?? "default";
const jc = JSONCodec();

// Subjects are `<namespace>.<subject>`, or the bare subject when there is no namespace.
const subject = (base) => (namespace ? `${namespace}.${base}` : base);
const now = () => new Date().toISOString(); // timestamps are ISO-8601 strings, never numbers

// The envelope every event carries. event_id is also sent as the Nats-Msg-Id header, so a
// retried publish is stored once.
function envelope(correlationId) {
  return {
    event_id: randomUUID().replaceAll("-", ""),
    occurred_at: now(),
    schema_version: 1,
    source: "node-example",
    workspace,
    ...(correlationId ? { correlation_id: correlationId } : {}),
  };
}

async function publish(js, base, payload) {
  const ack = await js.publish(subject(base), jc.encode(payload), { msgID: payload.event_id });
  return !ack.duplicate;
}

const nc = await connect({ servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222" });
try {
  const js = nc.jetstream();
  const taskId = `T-node-${randomUUID().slice(0, 8)}`;
  const runId = `R-node-${randomUUID().slice(0, 8)}`;

  // 1. The task: the estimator estimates it, the assigner assigns it, the tracker stores it.
  await publish(js, "task.created", {
    ...envelope(),
    task_id: taskId,
    title: "Add OAuth login",
    description: "- callback\n- refresh",
    priority: "P1",
    labels: ["backend"],
  });

  // 2. The run: started, its timeline events, finished with the number of events sent.
  await publish(js, "run.started", {
    ...envelope(runId),
    run_id: runId,
    task_id: taskId,
    model: "claude-sonnet-4",
    provider: "anthropic",
    agent_id: "node-agent",
    started_at: now(),
  });
  await publish(js, "task.status_changed", {
    ...envelope(runId),
    task_id: taskId,
    to_status: "in_progress",
    changed_at: now(),
    task_run_id: runId,
  });
  const events = [
    { kind: "phase_start", phase: "implement" },
    {
      kind: "worker_call",
      worker: "coder",
      model: "claude-sonnet-4",
      provider: "anthropic",
      // the provider's usage payload as-is: the tracker normalises it
      usage: { input_tokens: 1200, output_tokens: 300, cache_read_input_tokens: 800 },
      latency_ms: 2100,
    },
    { kind: "phase_end", phase: "implement" },
    { kind: "verification", command: "npm test", passed: true },
  ];
  for (const detail of events) {
    await publish(js, "run.event", { ...envelope(runId), run_id: runId, at: now(), detail });
  }
  await publish(js, "run.finished", {
    ...envelope(runId),
    run_id: runId,
    task_id: taskId,
    outcome: "complete",
    success: true,
    finished_at: now(),
    event_count: events.length, // run.event messages sent for this run
  });
  await publish(js, "task.status_changed", {
    ...envelope(runId),
    task_id: taskId,
    from_status: "in_progress",
    to_status: "ready_to_review",
    changed_at: now(),
    task_run_id: runId,
  });
  process.stdout.write(`${JSON.stringify({ task_id: taskId, run_id: runId })}\n`);
} finally {
  await nc.drain();
}
