#!/bin/sh
# Writes the allowlist Squid reads, then runs Squid in the foreground.
# Domains come from SQUID_ALLOWED_DOMAINS (comma- or space-separated) and from
# a mounted allowlist file (one per line, # comments); with neither, api.openai.com.
# A leading dot allows subdomains too (.openai.com). Anything that is not a
# host name is refused here, before Squid starts.
set -eu
set -f # names are split on whitespace below, never globbed

conf=${SQUID_CONF:-/etc/squid/squid.conf}
list_file=${SQUID_ALLOWLIST_FILE:-/etc/squid/allowlist.txt}
out=${SQUID_RUN_DIR:-/run/squid}/allowed-domains

domains=$(
  {
    printf '%s\n' "${SQUID_ALLOWED_DOMAINS:-}" | tr ',[:space:]' '\n'
    if [ -f "$list_file" ]; then sed -e 's/#.*//' "$list_file" | tr '[:space:]' '\n'; fi
  } | tr '[:upper:]' '[:lower:]' | sed -e '/^$/d' | sort -u
)
if [ -z "$domains" ]; then
  if [ -n "${SQUID_ALLOWED_DOMAINS+set}" ] || [ -f "$list_file" ]; then
    echo "squid-entrypoint: the allowlist is empty (SQUID_ALLOWED_DOMAINS and $list_file name no domain)" >&2
    exit 78
  fi
  domains=api.openai.com
fi

for d in $domains; do
  # A name of dot-separated labels with a letter in its last label: no addresses, ports, wildcards or schemes.
  if ! printf '%s\n' "$d" | grep -Eq '^\.?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$'; then
    echo "squid-entrypoint: not a domain name: '$d' (write api.example.com, or .example.com for its subdomains)" >&2
    exit 78
  fi
done

mkdir -p "$(dirname "$out")"
printf '%s\n' "$domains" > "$out"
echo "squid-entrypoint: allowing CONNECT to port 443 of: $(printf '%s' "$domains" | tr '\n' ' ')" >&2
exec squid -N -f "$conf" "$@"
