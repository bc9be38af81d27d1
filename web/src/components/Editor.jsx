// The shared notes of a workspace: a Y.Text in the document "notes", synced by
// y-websocket through /collab/{workspace}/notes.
//
// Editor binding: y-textarea binds a plain <textarea> to a Y.Text (with remote
// cursors drawn from awareness) in about 10 kB minified, against roughly 150 kB
// or more for CodeMirror 6 + y-codemirror.next. Plain-text notes need nothing
// more, and the page stays small enough to embed in the server binary.

import { useEffect, useMemo, useRef } from "react";
import { TextAreaBinding } from "y-textarea";
import { colorOf } from "../demo.js";
import { useDocument } from "../realtime.js";
import Avatar from "./Avatar.jsx";
import StatusDot from "./StatusDot.jsx";

const DOC_NAME = "notes";
const TEXT_NAME = "text";
// y-textarea keys its awareness cursor field by the textarea's id: every client must use the same one.
const TEXTAREA_ID = "notes";

/** `ready`: the user may open the workspace (a membership one is checked first). */
export default function Editor({ me, workspace, ready = true }) {
  const color = colorOf(me.id);
  const user = useMemo(() => ({ id: me.id, name: me.name, color: color.hex }), [me.id, me.name, color.hex]);
  const { doc, provider, status, synced, peers } = useDocument({
    workspaceId: ready ? workspace : null,
    docName: DOC_NAME,
    token: me.token,
    user,
  });
  const textarea = useRef(null);

  useEffect(() => {
    if (!doc || !provider || !textarea.current) return undefined;
    const binding = new TextAreaBinding(doc.getText(TEXT_NAME), textarea.current, {
      awareness: provider.awareness,
      clientName: me.name,
      color: color.rgb,
    });
    const reposition = () => binding.rePositionCursors();
    window.addEventListener("resize", reposition);
    return () => {
      window.removeEventListener("resize", reposition);
      binding.destroy();
    };
  }, [doc, provider, me.name, color.rgb]);

  return (
    <section className="pane editor" aria-label="Shared notes">
      <header className="pane-head">
        <h2>Notes</h2>
        <StatusDot label="Yjs" status={status === "connected" && !synced ? "connecting" : status} />
      </header>
      <div className="peers" data-testid="peers">
        <span className="muted small">Editing:</span>
        <span className="peer peer-me">
          <Avatar userId={me.id} name={me.name} size="sm" />
          You
        </span>
        {peers.map((p) => (
          <span key={p.id ?? p.name} className="peer" style={{ "--user-color": p.color }} data-peer={p.id}>
            <Avatar userId={p.id} name={p.name} size="sm" />
            {p.name}
          </span>
        ))}
      </div>
      <div className="editor-surface">
        <textarea
          id={TEXTAREA_ID}
          ref={textarea}
          spellCheck={false}
          placeholder={synced ? "Shared notes: type here, and watch them change in the other window." : "Syncing…"}
          aria-label={`Shared notes of #${workspace}`}
          data-testid="editor"
        />
      </div>
      <p className="hint muted small">
        A <code>Y.Text</code> shared over y-websocket; everyone in #{workspace} edits the same notes.
      </p>
    </section>
  );
}
