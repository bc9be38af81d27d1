import { colorOf } from "../demo.js";

/** A round badge with the user's initial in the user's color. */
export default function Avatar({ userId, name, size = "md", title }) {
  const label = name || userId || "?";
  return (
    <span
      className={`avatar avatar-${size}`}
      style={{ "--user-color": colorOf(userId).hex }}
      title={title ?? label}
      aria-hidden="true"
    >
      {label.slice(0, 1).toUpperCase()}
    </span>
  );
}
