import { useState } from "react";
import { sendNotification } from "../demo.js";

/**
 * Sends a notification through `POST /api/notifications` with the API key, as an
 * app's backend would; it arrives over SSE in the recipient's bell.
 */
export default function TestNotification({ me, users, apiKey }) {
  const [to, setTo] = useState(me.id);
  const [text, setText] = useState(`Hello from ${me.name}!`);
  const [result, setResult] = useState(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    const recipient = users.find((u) => u.id === to);
    try {
      const { id } = await sendNotification(apiKey, {
        userId: to,
        type: "test",
        data: { from: me.id, text: text.trim() || `Hello from ${me.name}!` },
      });
      setResult({ ok: true, text: `Sent #${id} to ${to === me.id ? "yourself" : recipient?.name ?? to}` });
    } catch (err) {
      setResult({ ok: false, text: err.message });
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="side-notify">
      <h3>Test notification</h3>
      <form className="notify-form" onSubmit={submit}>
        <label>
          <span>To</span>
          <select value={to} onChange={(e) => setTo(e.target.value)} data-testid="notify-to">
            {users.map((u) => (
              <option key={u.id} value={u.id}>
                {u.id === me.id ? `Me (${u.name})` : u.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          <span>Text</span>
          <input value={text} onChange={(e) => setText(e.target.value)} maxLength={500} data-testid="notify-text" />
        </label>
        <button type="submit" className="secondary" disabled={busy} data-testid="notify-send">
          Send notification
        </button>
        {result && (
          <p className={`small ${result.ok ? "muted" : "error-text"}`} role="status" data-testid="notify-result">
            {result.text}
          </p>
        )}
      </form>
      <p className="muted small">Sent by the API with the server's API key; delivered to the bell over SSE.</p>
    </section>
  );
}
