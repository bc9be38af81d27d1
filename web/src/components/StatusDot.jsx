const TONE = {
  connected: "ok",
  live: "ok",
  connecting: "wait",
  reconnecting: "wait",
  disconnected: "bad",
  closed: "bad",
};

/** A colored dot and a label: "Chat · connected". */
export default function StatusDot({ label, status }) {
  return (
    <span className={`status status-${TONE[status] ?? "wait"}`} title={`${label}: ${status}`}>
      <span className="status-dot" aria-hidden="true" />
      <span className="status-label">{label}</span>
      <span className="status-value">{status}</span>
    </span>
  );
}
