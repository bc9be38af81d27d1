import { useLayoutEffect, useRef, useState } from "react";
import Avatar from "./Avatar.jsx";

function timeOf(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function typingText(names) {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return "Several people are typing…";
}

/** The chat pane: history and live messages, who is typing, errors, and the composer. */
export default function Chat({ me, workspace, chat, typing, names, connected }) {
  const [draft, setDraft] = useState("");
  const list = useRef(null);
  const stickToBottom = useRef(true);

  useLayoutEffect(() => {
    const el = list.current;
    if (el && stickToBottom.current) el.scrollTop = el.scrollHeight;
  }, [chat.messages]);

  const onScroll = () => {
    const el = list.current;
    stickToBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
  };

  const submit = async () => {
    const content = draft;
    if (!content.trim()) return;
    setDraft("");
    typing.stopTyping();
    stickToBottom.current = true;
    const ack = await chat.send(content);
    // Refused (e.g. too_large): give the text back so it can be fixed.
    if (!ack?.ok) setDraft((current) => (current === "" ? content : current));
  };

  const onKeyDown = (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      submit();
    }
  };

  const onChange = (event) => {
    setDraft(event.target.value);
    if (event.target.value) typing.notifyTyping();
    else typing.stopTyping();
  };

  const typingNames = typing.typingUserIds.map((id) => names[id] ?? id);

  return (
    <section className="pane chat" aria-label="Chat">
      <header className="pane-head">
        <h2>
          <span className="hash">#</span>
          {workspace}
        </h2>
        <span className="muted small">{chat.joined ? `${chat.messages.length} message${chat.messages.length === 1 ? "" : "s"}` : "joining…"}</span>
      </header>

      <div className="messages" ref={list} onScroll={onScroll} data-testid="messages">
        {chat.hasOlder && (
          <button type="button" className="link load-older" onClick={chat.loadOlder}>
            Load earlier messages
          </button>
        )}
        {chat.joined && chat.messages.length === 0 && <p className="empty">No messages yet. Say hello 👋</p>}
        {chat.messages.map((m, i) => {
          const previous = chat.messages[i - 1];
          const continued =
            previous &&
            previous.userId === m.userId &&
            new Date(m.createdAt) - new Date(previous.createdAt) < 5 * 60 * 1000;
          const name = names[m.userId] ?? m.userId;
          return (
            <article
              key={m.id}
              className={`message${continued ? " continued" : ""}${m.userId === me.id ? " mine" : ""}`}
              data-id={m.id}
            >
              {continued ? <span className="message-gutter" /> : <Avatar userId={m.userId} name={name} />}
              <div className="message-main">
                {!continued && (
                  <div className="message-head">
                    <span className="message-author">{name}</span>
                    <time dateTime={m.createdAt}>{timeOf(m.createdAt)}</time>
                  </div>
                )}
                <p className="message-text">{m.content}</p>
              </div>
            </article>
          );
        })}
      </div>

      <div className="typing" aria-live="polite" data-testid="typing">
        {typingNames.length > 0 && (
          <>
            <span className="typing-dots" aria-hidden="true">
              <i />
              <i />
              <i />
            </span>
            {typingText(typingNames)}
          </>
        )}
      </div>

      {chat.error && (
        <div className="chat-error" role="alert" data-testid="chat-error">
          <code>{chat.error.code}</code>
          <span>{chat.error.message}</span>
          <button type="button" className="icon" onClick={chat.clearError} aria-label="Dismiss">
            ×
          </button>
        </div>
      )}

      <form
        className="composer"
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <textarea
          value={draft}
          onChange={onChange}
          onKeyDown={onKeyDown}
          rows={1}
          placeholder={connected ? `Message #${workspace}` : "Connecting…"}
          aria-label={`Message #${workspace}`}
          data-testid="composer"
        />
        <button type="submit" className="primary" disabled={!draft.trim()}>
          Send
        </button>
      </form>
      <p className="hint muted small">
        <kbd>Enter</kbd> to send · <kbd>Shift</kbd>+<kbd>Enter</kbd> for a new line
      </p>
    </section>
  );
}
