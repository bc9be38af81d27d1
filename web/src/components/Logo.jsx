/** The Switchboard mark: three nodes, two wires. */
export default function Logo({ size = 28 }) {
  return (
    <svg width={size} height={size} viewBox="0 0 32 32" aria-hidden="true" className="logo">
      <rect width="32" height="32" rx="8" fill="currentColor" />
      <path d="M10 11L16 22L22 11" stroke="white" strokeWidth="2" fill="none" strokeLinejoin="round" />
      <circle cx="10" cy="11" r="3" fill="white" />
      <circle cx="22" cy="11" r="3" fill="white" />
      <circle cx="16" cy="22" r="3" fill="white" />
    </svg>
  );
}
