import { useEffect, useRef, useState } from "react";

function describe(n, names) {
  const data = n.data && typeof n.data === "object" ? n.data : {};
  const text = data.text ?? data.message ?? (n.data == null ? "" : JSON.stringify(n.data));
  const from = data.from ? names[data.from] ?? data.from : null;
  return { text, from };
}

function timeOf(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** The bell in the header: unread count, and a panel with the notifications. */
export default function NotificationBell({ inbox, names }) {
  const { notifications, unreadCount, status, error, markRead, markAllRead } = inbox;
  const [open, setOpen] = useState(false);
  const [ring, setRing] = useState(0);
  const previous = useRef(unreadCount);
  const wrap = useRef(null);

  // Ring when the unread count goes up (a new notification arrived).
  useEffect(() => {
    if (unreadCount > previous.current) setRing((r) => r + 1);
    previous.current = unreadCount;
  }, [unreadCount]);

  useEffect(() => {
    if (!open) return undefined;
    const onDown = (e) => {
      if (wrap.current && !wrap.current.contains(e.target)) setOpen(false);
    };
    const onKey = (e) => e.key === "Escape" && setOpen(false);
    document.addEventListener("pointerdown", onDown);
    document.addEventListener("keydown", onKey);
    return () => {
      document.removeEventListener("pointerdown", onDown);
      document.removeEventListener("keydown", onKey);
    };
  }, [open]);

  return (
    <div className="bell-wrap" ref={wrap}>
      <button
        type="button"
        className="bell"
        aria-label={`Notifications, ${unreadCount} unread`}
        aria-expanded={open}
        onClick={() => setOpen((o) => !o)}
        data-testid="bell"
      >
        <svg key={ring} className={ring ? "ring" : ""} width="20" height="20" viewBox="0 0 24 24" aria-hidden="true">
          <path
            d="M18 8a6 6 0 1 0-12 0c0 7-3 9-3 9h18s-3-2-3-9M13.7 21a2 2 0 0 1-3.4 0"
            fill="none"
            stroke="currentColor"
            strokeWidth="2"
            strokeLinecap="round"
            strokeLinejoin="round"
          />
        </svg>
        {unreadCount > 0 && (
          <span className="badge" data-testid="bell-count">
            {unreadCount > 99 ? "99+" : unreadCount}
          </span>
        )}
      </button>
      {open && (
        <div className="bell-panel" role="dialog" aria-label="Notifications" data-testid="bell-panel">
          <div className="bell-panel-head">
            <strong>Notifications</strong>
            {unreadCount > 0 && (
              <button type="button" className="link" onClick={markAllRead}>
                Mark all read
              </button>
            )}
          </div>
          {notifications.length === 0 ? (
            <p className="empty">Nothing yet. Send one with the “Test notification” form.</p>
          ) : (
            <ul className="notification-list" data-testid="notifications">
              {notifications.slice(0, 50).map((n) => {
                const { text, from } = describe(n, names);
                return (
                  <li key={n.id} className={n.read ? "read" : "unread"}>
                    <button type="button" onClick={() => markRead(n.id)} title={n.read ? "Read" : "Mark as read"}>
                      <span className="notification-dot" aria-hidden="true" />
                      <span className="notification-body">
                        <span className="notification-text">{text}</span>
                        <span className="notification-meta">
                          {n.type}
                          {from ? ` · from ${from}` : ""} · {timeOf(n.createdAt)}
                        </span>
                      </span>
                    </button>
                  </li>
                );
              })}
            </ul>
          )}
          <div className="bell-panel-foot muted">
            EventSource: {status}
            {error ? ` · ${error}` : ""}
          </div>
        </div>
      )}
    </div>
  );
}
