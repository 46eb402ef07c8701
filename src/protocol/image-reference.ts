/**
 * A Docker image reference as the distribution/reference grammar reads it (sha256 digests only):
 * the deployment schema accepts an `imageTag` only when Docker would.
 */

const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const IPV6_HOST = /^\[[0-9a-fA-F:]+\]$/;
// Docker also accepts runs of '-' as a separator; '__' is the only multi-char '_' separator.
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

function isValidHost(hostPort: string): boolean {
  const m = /^(.*?)(?::([0-9]{1,5}))?$/.exec(hostPort);
  if (!m || !m[1]) return false;
  if (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535)) return false;
  const host = m[1];
  if (IPV6_HOST.test(host)) return true;
  return host.split('.').every((c) => DOMAIN_COMPONENT.test(c));
}

/** `[host[:port]/]path[/path...][:tag][@sha256:<64 hex>]`, at most 255 characters. */
export function isValidImageReference(ref: string): boolean {
  if (ref.length === 0 || ref.length > 255) return false;
  let rest = ref;
  const at = rest.indexOf('@');
  if (at !== -1) {
    if (!DIGEST_RE.test(rest.slice(at + 1))) return false;
    rest = rest.slice(0, at);
  }
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    if (!TAG_RE.test(rest.slice(colon + 1))) return false;
    rest = rest.slice(0, colon);
  }
  const parts = rest.split('/');
  const first = parts[0]!;
  // Same rule as Docker's splitDockerDomain: the first component is a registry only if it looks like one.
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase())) {
    if (!isValidHost(first)) return false;
    parts.shift();
  }
  return parts.length > 0 && parts.every((p) => PATH_COMPONENT.test(p));
}
