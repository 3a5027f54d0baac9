#!/bin/sh
# Writes the allowlist and the proxy-authentication settings Squid reads, then
# runs Squid in the foreground.
# Domains come from SQUID_ALLOWED_DOMAINS (comma- or space-separated) and from
# a mounted allowlist file (one per line, # comments); with neither, api.openai.com.
# A leading dot allows subdomains too (.openai.com). Anything that is not a
# host name is refused here, before Squid starts.
# Clients authenticate (Basic) as SQUID_PROXY_USER (default api-proxy) with the
# password in SQUID_PROXY_PASSWORD or the file SQUID_PROXY_PASSWORD_FILE; with
# neither, Squid does not start, unless SQUID_AUTH=off.
set -eu
set -f # names are split on whitespace below, never globbed

conf=${SQUID_CONF:-/etc/squid/squid.conf}
list_file=${SQUID_ALLOWLIST_FILE:-/etc/squid/allowlist.txt}
run_dir=${SQUID_RUN_DIR:-/run/squid}
out=$run_dir/allowed-domains

refuse() {
  echo "squid-entrypoint: $*" >&2
  exit 78
}

# Writes $run_dir/auth.conf (included by squid.conf) and, with auth on, the password file it names.
write_auth() {
  case "${SQUID_AUTH:-on}" in
    off)
      printf '# SQUID_AUTH=off: no proxy authentication; the networks alone keep other clients away.\n' > "$run_dir/auth.conf"
      echo "squid-entrypoint: SQUID_AUTH=off: any client that reaches port 3128 may open tunnels to the allowlist" >&2
      return
      ;;
    on) ;;
    *) refuse "SQUID_AUTH must be 'on' or 'off'" ;;
  esac
  user=${SQUID_PROXY_USER:-api-proxy}
  printf '%s\n' "$user" | grep -Eq '^[A-Za-z0-9._-]{1,64}$' || refuse "SQUID_PROXY_USER: must be 1 to 64 letters, digits, '.', '_' or '-'"
  if [ -n "${SQUID_PROXY_PASSWORD_FILE:-}" ]; then
    [ -z "${SQUID_PROXY_PASSWORD:-}" ] || refuse "SQUID_PROXY_PASSWORD: is set together with SQUID_PROXY_PASSWORD_FILE; set only one"
    [ -r "$SQUID_PROXY_PASSWORD_FILE" ] || refuse "SQUID_PROXY_PASSWORD_FILE: $SQUID_PROXY_PASSWORD_FILE cannot be read"
    password=$(cat "$SQUID_PROXY_PASSWORD_FILE") # $(…) drops trailing newlines
  else
    password=${SQUID_PROXY_PASSWORD:-}
  fi
  [ -n "$password" ] || refuse "SQUID_PROXY_PASSWORD: is missing (set it or SQUID_PROXY_PASSWORD_FILE, or SQUID_AUTH=off when the networks alone keep the agent away from Squid)"
  # Never the value in a message: only what is wrong with it.
  case "$password" in
    *[[:space:][:cntrl:]]*) refuse "SQUID_PROXY_PASSWORD: holds whitespace or control characters" ;;
  esac
  # SHA-512 crypt with a random salt, through perl-base (in every Debian image) and
  # glibc's crypt; basic_ncsa_auth checks it with the same crypt. The password goes
  # through the environment, never a command line.
  salt=$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c1-16)
  hash=$(SQUID_PW=$password SQUID_SALT=$salt perl -e 'print crypt($ENV{SQUID_PW}, "\$6\$$ENV{SQUID_SALT}\$")')
  case "$hash" in
    \$6\$*) ;;
    *) echo "squid-entrypoint: could not hash the proxy password" >&2; exit 1 ;;
  esac
  (umask 077 && printf '%s:%s\n' "$user" "$hash" > "$run_dir/passwd")
  cat > "$run_dir/auth.conf" <<AUTH
auth_param basic program /usr/lib/squid/basic_ncsa_auth $run_dir/passwd
auth_param basic children 2 startup=1 idle=1
auth_param basic realm api-proxy egress
auth_param basic credentialsttl 1 hour
acl api_proxy_client proxy_auth $user
http_access deny !api_proxy_client
AUTH
  echo "squid-entrypoint: clients must authenticate as $user" >&2
}

domains=$(
  {
    printf '%s\n' "${SQUID_ALLOWED_DOMAINS:-}" | tr ',[:space:]' '\n'
    if [ -f "$list_file" ]; then sed -e 's/#.*//' "$list_file" | tr '[:space:]' '\n'; fi
  } | tr '[:upper:]' '[:lower:]' | sed -e '/^$/d' | sort -u
)
if [ -z "$domains" ]; then
  if [ -n "${SQUID_ALLOWED_DOMAINS+set}" ] || [ -f "$list_file" ]; then
    refuse "the allowlist is empty (SQUID_ALLOWED_DOMAINS and $list_file name no domain)"
  fi
  domains=api.openai.com
fi

for d in $domains; do
  # A name of dot-separated labels with a letter in its last label: no addresses, ports, wildcards or schemes.
  if ! printf '%s\n' "$d" | grep -Eq '^\.?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$'; then
    refuse "not a domain name: '$d' (write api.example.com, or .example.com for its subdomains)"
  fi
done

mkdir -p "$run_dir"
write_auth
printf '%s\n' "$domains" > "$out"
echo "squid-entrypoint: allowing CONNECT to port 443 of: $(printf '%s' "$domains" | tr '\n' ' ')" >&2
# Squid and its helpers need only the hash.
unset SQUID_PROXY_PASSWORD
exec squid -N -f "$conf" "$@"
