/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <stdarg.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf_p.h"
#include "dav_p.h"
#include "limits.h"
#include "log_p.h"
#include "macro.h"
#include "xml_p.h"

struct ks_dav {
	CURLM *multi;
	char *base_url;
	char *scheme_host;	/* "https://host:port" of base_url */
	char *username;
	char *password;
	char *ca_file;
	bool insecure_http;
	long connect_timeout;
	long low_speed_time;
	unsigned max_parallel;
	unsigned n_requests;
	unsigned retry_after;	/* longest Retry-After of a 429 or 503 seen */
	bool running;		/* inside ks_dav_run(): its callbacks must not start another */
};

typedef struct req_state {
	ks_dav *dav;
	ks_dav_request *req;
	CURL *easy;
	struct curl_slist *headers;
	char *url;
	ks_ms_parser *parser;
	ks_buf body;
	int cb_error;		/* error returned by a callback, stops the whole run */
	size_t streamed;	/* multistatus bytes fed to the parser */
	bool is_multistatus;
	bool status_checked;
	char curl_err[CURL_ERROR_SIZE];
} req_state;

static int curl_global_done;

int ks_dav_status_to_errno(long status)
{
	if (status >= 200 && status < 300)
		return 0;
	switch (status) {
	case 401:
	case 403:
		return -EACCES;
	case 404:
	case 410:
		return -ENOENT;
	case 412:
		return -ESTALE;
	case 507:
		return -ENOSPC;
	case 429:
	case 503:
		return -EAGAIN;
	case 405:
	case 501:
		return -EOPNOTSUPP;
	}
	if (status >= 500)
		return -EIO;
	return -EPROTO;
}

const char *ks_http_reason(long status)
{
	static const struct {
		long status;
		const char *text;
	} phrases[] = {
		{ 207, "Multi-Status" }, { 400, "Bad Request" }, { 401, "Unauthorized" },
		{ 403, "Forbidden" }, { 404, "Not Found" }, { 405, "Method Not Allowed" },
		{ 409, "Conflict" }, { 410, "Gone" }, { 412, "Precondition Failed" },
		{ 413, "Content Too Large" }, { 415, "Unsupported Media Type" },
		{ 422, "Unprocessable Content" }, { 423, "Locked" }, { 429, "Too Many Requests" },
		{ 500, "Internal Server Error" }, { 501, "Not Implemented" },
		{ 502, "Bad Gateway" }, { 503, "Service Unavailable" },
		{ 504, "Gateway Timeout" }, { 507, "Insufficient Storage" },
	};

	for (size_t i = 0; i < ELEMENTSOF(phrases); i++)
		if (phrases[i].status == status)
			return phrases[i].text;
	return NULL;
}


static int curlcode_to_errno(CURLcode c)
{
	switch (c) {
	case CURLE_OK:
		return 0;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
		return -EKEYREJECTED;
	case CURLE_SSL_CONNECT_ERROR:
		return -EPROTO;
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EPROTONOSUPPORT;
	case CURLE_TOO_MANY_REDIRECTS:
		return -ELOOP;
	case CURLE_FILESIZE_EXCEEDED:
		return -EFBIG;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return -ECONNRESET;
	default:
		return -EIO;
	}
}

static int split_scheme_host(const char *url, char **ret)
{
	const char *p = strstr(url, "://");
	if (!p)
		return -EINVAL;
	p += 3;
	size_t n = strcspn(p, "/?#");
	char *s = strndup(url, (size_t) (p - url) + n);
	if (!s)
		return -ENOMEM;
	for (char *c = s; *c; c++)
		*c = (char) tolower((unsigned char) *c);
	*ret = s;
	return 0;
}

int ks_dav_new(const ks_dav_opts *o, ks_dav **ret)
{
	ks_dav *d;
	int r;

	if (!curl_global_done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return -EIO;
		curl_global_done = 1;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->base_url = strdup(o->base_url);
	d->username = o->username ? strdup(o->username) : NULL;
	d->password = o->password ? strdup(o->password) : strdup("");
	d->ca_file = o->ca_file ? strdup(o->ca_file) : NULL;
	if (!d->base_url || (o->username && !d->username) || !d->password ||
	    (o->ca_file && !d->ca_file)) {
		ks_dav_free(d);
		return -ENOMEM;
	}
	r = split_scheme_host(o->base_url, &d->scheme_host);
	if (r < 0) {
		ks_dav_free(d);
		return r;
	}
	d->insecure_http = o->allow_insecure_http;
	d->connect_timeout = o->connect_timeout_s ? o->connect_timeout_s : 30;
	d->low_speed_time = o->low_speed_time_s ? o->low_speed_time_s : 60;
	d->max_parallel = o->max_parallel ? o->max_parallel : KS_DAV_MAX_PARALLEL;
	d->multi = curl_multi_init();
	if (!d->multi) {
		ks_dav_free(d);
		return -ENOMEM;
	}
	(void) curl_multi_setopt(d->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) d->max_parallel);
	(void) curl_multi_setopt(d->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	*ret = d;
	return 0;
}

ks_dav *ks_dav_free(ks_dav *d)
{
	if (!d)
		return NULL;
	if (d->multi)
		curl_multi_cleanup(d->multi);
	if (d->password) {
		explicit_bzero(d->password, strlen(d->password));
		free(d->password);
	}
	free(d->username);
	free(d->ca_file);
	free(d->base_url);
	free(d->scheme_host);
	free(d);
	return NULL;
}

const char *ks_dav_base_url(const ks_dav *d)
{
	return d->base_url;
}

unsigned ks_dav_retry_after(const ks_dav *d)
{
	return d->retry_after;
}

unsigned ks_dav_request_count(const ks_dav *d)
{
	return d->n_requests;
}

void ks_dav_request_done(ks_dav_request *req)
{
	free(req->etag);
	free(req->last_modified);
	free(req->effective_url);
	free(req->sync_token);
	free(req->body_text);
	free(req->redirect_url);
	req->etag = req->last_modified = req->effective_url = req->sync_token = NULL;
	req->body_text = NULL;
	req->redirect_url = NULL;
	req->body_text_len = 0;
}

static void set_errmsg(ks_dav_request *req, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_errmsg(ks_dav_request *req, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(req->errmsg, sizeof(req->errmsg), fmt, ap);
	va_end(ap);
}

/* The message for a 207 to a request that wants none, from the status the body reports. */
static void multistatus_failure(req_state *s, ks_dav_request *req)
{
	_cleanup_(ks_xml_error_done) ks_xml_error e = {};

	(void) ks_xml_error_body(s->body.data, s->body.len, &e);
	if (e.status)
		set_errmsg(req, "%s %s: HTTP 207 Multi-Status reporting HTTP %d%s%s",
			   req->method, s->url, e.status, REASON(e.status));
	else
		set_errmsg(req, "%s %s: HTTP 207 Multi-Status reporting no failure, taken for "
			   "one", req->method, s->url);
}

static size_t on_header(char *buf, size_t size, size_t n, void *userdata)
{
	req_state *s = userdata;
	size_t len = size * n;
	char *v;

	/* A new status line: headers of a redirect or a 100 Continue are forgotten. */
	if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		free(s->req->etag);
		free(s->req->last_modified);
		s->req->etag = s->req->last_modified = NULL;
		s->req->retry_after = 0;
		return len;
	}
	const char *colon = memchr(buf, ':', len);
	if (!colon)
		return len;
	size_t klen = (size_t) (colon - buf);
	const char *val = colon + 1;
	size_t vlen = len - klen - 1;
	while (vlen > 0 && (*val == ' ' || *val == '\t')) {
		val++;
		vlen--;
	}
	while (vlen > 0 && (val[vlen - 1] == '\r' || val[vlen - 1] == '\n' || val[vlen - 1] == ' '))
		vlen--;
	/* A validator that could not be sent back in a header (a control character in it) is
	 * as good as none: kept, every conditional request with it would fail. */
	bool sendable = true;
	for (size_t i = 0; i < vlen; i++)
		sendable &= !(((unsigned char) val[i] < 0x20 && val[i] != '\t') || val[i] == 0x7f);
	if (klen == 4 && strncasecmp(buf, "ETag", 4) == 0 && vlen > 0 && vlen < 1024 &&
	    sendable) {
		v = strndup(val, vlen);
		if (v) {
			free(s->req->etag);
			s->req->etag = v;
		}
	} else if (klen == 13 && strncasecmp(buf, "Last-Modified", 13) == 0 && vlen > 0 &&
		   vlen < 128 && sendable) {
		v = strndup(val, vlen);
		if (v) {
			free(s->req->last_modified);
			s->req->last_modified = v;
		}
	} else if (klen == 8 && strncasecmp(buf, "Location", 8) == 0 && vlen > 0 && vlen < 8192) {
		v = strndup(val, vlen);
		if (v) {
			free(s->req->redirect_url);
			s->req->redirect_url = v;
		}
	} else if (klen == 11 && strncasecmp(buf, "Retry-After", 11) == 0 && vlen > 0) {
		unsigned long secs = 0;
		size_t i = 0;
		for (; i < vlen && isdigit((unsigned char) val[i]); i++)
			if (secs < KS_RETRY_AFTER_MAX)
				secs = secs * 10 + (unsigned long) (val[i] - '0');
		/* An HTTP-date instead of seconds: wait a minute rather than parse a date. */
		s->req->retry_after = i == vlen ? (unsigned) KS_MIN(secs, (unsigned long)
								    KS_RETRY_AFTER_MAX) : 60;
	}
	return len;
}

static int start_body(req_state *s)
{
	long status = 0;
	char *ct = NULL;

	s->status_checked = true;
	(void) curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
	(void) curl_easy_getinfo(s->easy, CURLINFO_CONTENT_TYPE, &ct);
	s->req->status = status;
	s->is_multistatus = status == 207 && s->req->on_response;
	if (!s->is_multistatus)
		return 0;
	return ks_ms_parser_new(s->req->on_response, s->req->userdata, &s->parser);
}

static size_t on_write(char *buf, size_t size, size_t n, void *userdata)
{
	req_state *s = userdata;
	size_t len = size * n;
	int r;

	if (!s->status_checked) {
		r = start_body(s);
		if (r < 0) {
			s->cb_error = r;
			return 0;
		}
	}
	if (s->is_multistatus) {
		if (len > KS_DAV_MAX_STREAM - s->streamed) {
			s->streamed = KS_DAV_MAX_STREAM;	/* tells the cause apart */
			s->cb_error = -EFBIG;
			return 0;
		}
		s->streamed += len;
		r = ks_ms_parser_feed(s->parser, buf, len);
		if (r < 0) {
			s->cb_error = r;
			return 0;
		}
		return len;
	}
	if (s->req->max_body) {
		/* A payload (an item's GET): past the cap it is refused, not cut. */
		if (len > s->body.max - s->body.len) {
			s->cb_error = -EFBIG;
			return 0;
		}
		r = ks_buf_append(&s->body, buf, len);
		if (r < 0) {
			s->cb_error = r;
			return 0;
		}
		return len;
	}
	/* Other bodies are kept for error messages only, up to the cap; the rest is dropped. */
	if (s->body.len < KS_DAV_MAX_BODY)
		(void) ks_buf_append(&s->body, buf, KS_MIN(len, KS_DAV_MAX_BODY - s->body.len));
	return len;
}

static void req_state_free(req_state *s)
{
	if (!s)
		return;
	if (s->easy) {
		if (s->dav)
			(void) curl_multi_remove_handle(s->dav->multi, s->easy);
		curl_easy_cleanup(s->easy);
	}
	curl_slist_free_all(s->headers);
	ks_ms_parser_free(s->parser);
	ks_buf_done(&s->body);
	free(s->url);
	free(s);
}

/* href resolved against base; user and password parts are dropped. */
static int resolve_against(const char *base, const char *href, char **ret)
{
	CURLU *u = curl_url();
	char *out = NULL;
	int r = 0;

	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, base, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_URL, href, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_USER, NULL, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &out, 0) != CURLUE_OK)
		r = -EINVAL;
	curl_url_cleanup(u);
	if (r < 0)
		return r;
	*ret = strdup(out);
	curl_free(out);
	return *ret ? 0 : -ENOMEM;
}

static int resolve_url(ks_dav *d, const char *href, char **ret)
{
	return resolve_against(d->base_url, href, ret);
}

static int add_header(req_state *s, const char *name, const char *value)
{
	char line[1200];
	struct curl_slist *l;

	/* libcurl sends custom headers as they are: a CR or LF in a value that came from a
	 * server (an ETag) would add header lines of its choosing. */
	for (const unsigned char *c = (const unsigned char *) value; *c; c++)
		if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
			return -EINVAL;

	if (snprintf(line, sizeof(line), "%s: %s", name, value) >= (int) sizeof(line))
		return -EINVAL;
	l = curl_slist_append(s->headers, line);
	if (!l)
		return -ENOMEM;
	s->headers = l;
	return 0;
}

static int req_setup(ks_dav *d, ks_dav_request *req, req_state **ret)
{
	req_state *s = calloc(1, sizeof(*s));
	CURL *e;
	int r;

	if (!s)
		return -ENOMEM;
	s->dav = d;
	s->req = req;
	s->body.max = req->max_body ? req->max_body : KS_DAV_MAX_BODY;
	r = resolve_url(d, req->url, &s->url);
	if (r < 0)
		goto fail;
	bool https = strncasecmp(s->url, "https://", 8) == 0;
	if (!https) {
		/* Never leave TLS for another host: plain http only where the account itself is
		 * plain http, which the config allows for loopback or by explicit choice. */
		if (strncasecmp(d->base_url, "http://", 7) != 0) {
			r = -EPERM;
			goto fail;
		}
	}
	e = s->easy = curl_easy_init();
	if (!e) {
		r = -ENOMEM;
		goto fail;
	}
	curl_easy_setopt(e, CURLOPT_URL, s->url);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	if (strcmp(req->method, "GET") == 0)
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(e, CURLOPT_PRIVATE, s);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->curl_err);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "ksync/0.1");
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, d->connect_timeout);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, d->low_speed_time);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, https ? "https" : "http,https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, https ? "https" : "http,https");
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (d->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, d->ca_file);
	/* Redirects are never followed by libcurl: ks_dav_run_one() checks each target first. */
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	if (d->username) {
		curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
		curl_easy_setopt(e, CURLOPT_USERNAME, d->username);
		curl_easy_setopt(e, CURLOPT_PASSWORD, d->password);
	}
	if (req->body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
		r = add_header(s, "Content-Type",
			       req->content_type ? req->content_type : "application/xml; charset=utf-8");
		if (r < 0)
			goto fail;
	}
	/* libcurl adds "Expect: 100-continue" to bodies over 1 MB; DAV servers gain nothing. */
	r = add_header(s, "Expect", "");
	if (r >= 0 && req->depth)
		r = add_header(s, "Depth", req->depth);
	if (r >= 0 && req->if_match)
		r = add_header(s, "If-Match", req->if_match);
	if (r >= 0 && req->if_none_match)
		r = add_header(s, "If-None-Match", req->if_none_match);
	if (r >= 0 && req->if_modified_since)
		r = add_header(s, "If-Modified-Since", req->if_modified_since);
	if (r >= 0 && req->accept)
		r = add_header(s, "Accept", req->accept);
	if (r < 0)
		goto fail;
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
	*ret = s;
	return 0;
fail:
	s->dav = NULL;
	req_state_free(s);
	return r;
}

/* One line per request at debug level: method, URL (without any user:password@ part),
 * status, bytes each way and time. Never a header or a body: they carry credentials and the
 * user's data. */
static void trace(req_state *s, CURLcode code, long status)
{
	curl_off_t up = 0, down = 0, usec = 0;
	const char *url = s->url, *scheme = strstr(url, "://");

	(void) curl_easy_getinfo(s->easy, CURLINFO_SIZE_UPLOAD_T, &up);
	(void) curl_easy_getinfo(s->easy, CURLINFO_SIZE_DOWNLOAD_T, &down);
	(void) curl_easy_getinfo(s->easy, CURLINFO_TOTAL_TIME_T, &usec);
	size_t host = scheme ? (size_t) (scheme + 3 - url) : 0;
	const char *at = scheme ? strpbrk(url + host, "@/") : NULL;
	size_t skip = at && *at == '@' ? (size_t) (at + 1 - url) - host : 0;
	ks_log_debug("HTTP %s %.*s%s: %ld, %" CURL_FORMAT_CURL_OFF_T " bytes sent, %"
		     CURL_FORMAT_CURL_OFF_T " received, %" CURL_FORMAT_CURL_OFF_T " ms%s%s",
		     s->req->method, (int) host, url, url + host + skip, status, up, down,
		     usec / 1000, code != CURLE_OK ? ": " : "",
		     code != CURLE_OK ? curl_easy_strerror(code) : "");
}

static void req_finish(req_state *s, CURLcode code)
{
	ks_dav_request *req = s->req;
	long status = 0;
	char *eff = NULL;
	long redirects = 0;
	int r;

	(void) curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
	(void) curl_easy_getinfo(s->easy, CURLINFO_EFFECTIVE_URL, &eff);
	(void) curl_easy_getinfo(s->easy, CURLINFO_REDIRECT_COUNT, &redirects);
	s->dav->n_requests += 1 + (unsigned) redirects;
	req->status = status;
	trace(s, code, status);
	if (eff)
		req->effective_url = strdup(eff);

	if (s->cb_error) {
		r = s->cb_error;
		if (r == -EBADMSG)
			set_errmsg(req, "malformed XML in the %s response from %s: %s", req->method,
				   s->url, ks_ms_parser_why(s->parser));
		else if (r == -EFBIG && !s->is_multistatus)
			set_errmsg(req, "the answer to %s %s is over the %zu MB limit", req->method,
				   s->url, s->body.max >> 20);
		else if (r == -EFBIG && s->streamed >= KS_DAV_MAX_STREAM)
			set_errmsg(req, "the %s response from %s is over the %zu MB limit",
				   req->method, s->url, KS_DAV_MAX_STREAM >> 20);
		else if (r == -EFBIG)
			set_errmsg(req, "a value in the %s response from %s is too large",
				   req->method, s->url);
	} else if (code != CURLE_OK) {
		r = curlcode_to_errno(code);
		curl_off_t got = 0, want = -1;
		(void) curl_easy_getinfo(s->easy, CURLINFO_SIZE_DOWNLOAD_T, &got);
		(void) curl_easy_getinfo(s->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &want);
		const char *why = s->curl_err[0] ? s->curl_err : curl_easy_strerror(code);
		if (r == -EKEYREJECTED)
			set_errmsg(req, "the TLS certificate of %s could not be verified (%s); for a "
				   "server with a private CA, set ca_file in the account", s->url, why);
		else if (code == CURLE_OPERATION_TIMEDOUT) {
			/* Connected (maybe over a reused connection) once the request went out. */
			long sent = 0;
			(void) curl_easy_getinfo(s->easy, CURLINFO_REQUEST_SIZE, &sent);
			if (sent > 0)
				set_errmsg(req, "%s %s: timed out: the server sent no data for %ld s "
					   "(%s)", req->method, s->url, s->dav->low_speed_time, why);
			else
				set_errmsg(req, "%s %s: timed out: no connection within %ld s (%s)",
					   req->method, s->url, s->dav->connect_timeout, why);
		} else if (code == CURLE_PARTIAL_FILE && want >= 0)
			set_errmsg(req, "%s %s: connection closed after %" CURL_FORMAT_CURL_OFF_T
				   " of %" CURL_FORMAT_CURL_OFF_T " bytes of the answer",
				   req->method, s->url, got, want);
		else if (code == CURLE_GOT_NOTHING)
			set_errmsg(req, "%s %s: connection closed by the server before any answer",
				   req->method, s->url);
		else
			set_errmsg(req, "%s %s: %s", req->method, s->url, why);
	} else {
		if (!s->status_checked)
			(void) start_body(s);
		r = ks_dav_status_to_errno(status);
		if (r == 0 && status == 207 && !req->on_response) {
			/* A multistatus to a request on one resource (a PUT, a DELETE) is no
			 * success: Xandikos refuses a PUT so, the failure inside. */
			r = -EPROTO;
			multistatus_failure(s, req);
		} else if (r == 0 && s->is_multistatus) {
			r = ks_ms_parser_finish(s->parser);
			if (r < 0)
				set_errmsg(req, "malformed XML in the %s response from %s: %s",
					   req->method, s->url, ks_ms_parser_why(s->parser));
		} else if (r == 0 && req->on_response && status != 207 && status != 204 &&
			   req->body) {
			/* A DAV request with a body answered by 200 without a multistatus. */
			r = -EPROTO;
			set_errmsg(req, "%s %s answered %ld, not a multistatus",
				   req->method, s->url, status);
		} else if (r < 0 && req->retry_after && (status == 429 || status == 503)) {
			set_errmsg(req, "%s %s: HTTP %ld%s%s, retry after %u s", req->method,
				   s->url, status, REASON(status), req->retry_after);
		} else if (r < 0) {
			set_errmsg(req, "%s %s: HTTP %ld%s%s", req->method, s->url, status,
				   REASON(status));
		}
	}
	if (s->parser) {
		const char *t = ks_ms_parser_sync_token(s->parser);
		if (t)
			req->sync_token = strdup(t);
		req->n_responses = ks_ms_parser_count(s->parser);
	}
	if (s->body.len) {
		req->body_text_len = s->body.len;
		req->body_text = ks_buf_steal(&s->body);
	}
	/* The Location header as sent (libcurl's own absolute form would carry the
	 * credentials), resolved against this request's URL. */
	if (status >= 300 && status < 400 && req->redirect_url) {
		char *abs = NULL;
		if (resolve_against(s->url, req->redirect_url, &abs) >= 0) {
			free(req->redirect_url);
			req->redirect_url = abs;
		}
	} else {
		free(req->redirect_url);
		req->redirect_url = NULL;
	}
	req->result = r;
	if ((status == 429 || status == 503) && req->retry_after > s->dav->retry_after)
		s->dav->retry_after = req->retry_after;
	/* A reply to a request that changes the server is a step a crash can follow. */
	if (code == CURLE_OK && strcmp(req->method, "REPORT") != 0 &&
	    strcmp(req->method, "PROPFIND") != 0 && strcmp(req->method, "GET") != 0)
		ks_step("server change");
}

static int dav_run(ks_dav *d, ks_dav_request *reqs, size_t n);

int ks_dav_run(ks_dav *d, ks_dav_request *reqs, size_t n)
{
	/* A run started from a callback of a running one would drive the outer transfers
	 * from its own loop and return while they still write into requests the outer
	 * caller owns: work for later is queued by the caller instead. */
	if (d->running)
		return -EDEADLK;
	d->running = true;
	int r = dav_run(d, reqs, n);
	d->running = false;
	return r;
}

static int dav_run(ks_dav *d, ks_dav_request *reqs, size_t n)
{
	size_t next = 0, running = 0;
	int r = 0;

	for (size_t i = 0; i < n; i++) {
		reqs[i].result = 0;
		reqs[i].status = 0;
		reqs[i].errmsg[0] = 0;
		reqs[i].priv = NULL;
	}
	while (next < n || running > 0) {
		while (r == 0 && next < n && running < d->max_parallel) {
			ks_dav_request *req = &reqs[next++];
			req_state *s = NULL;
			int k = req_setup(d, req, &s);
			if (k < 0) {
				req->result = k;
				if (k == -EPERM)
					set_errmsg(req, "refusing to leave https for '%s'", req->url);
				else
					set_errmsg(req, "cannot prepare %s %s: %s", req->method, req->url,
						   strerror(-k));
				if (req->on_done)
					r = req->on_done(req, req->userdata);
				continue;
			}
			if (curl_multi_add_handle(d->multi, s->easy) != CURLM_OK) {
				s->dav = NULL;
				req_state_free(s);
				return -ENOMEM;
			}
			req->priv = s;
			running++;
		}
		if (running == 0)
			break;
		int still = 0;
		CURLMcode mc = curl_multi_perform(d->multi, &still);
		if (mc != CURLM_OK)
			return -EIO;
		CURLMsg *m;
		int left;
		while ((m = curl_multi_info_read(d->multi, &left))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			req_state *s = NULL;
			(void) curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **) &s);
			CURLcode code = m->data.result;
			int cb_error = s->cb_error;
			ks_dav_request *req = s->req;
			req_finish(s, code);
			req->priv = NULL;
			req_state_free(s);
			running--;
			/* A callback's own failure aborts the run; a failed request does not. */
			if (cb_error && cb_error != -EBADMSG && cb_error != -EFBIG && r == 0)
				r = cb_error;
			if (r == 0 && req->on_done)
				r = req->on_done(req, req->userdata);
		}
		if (r < 0) {
			/* Abandon whatever is still in flight. */
			for (size_t i = 0; i < next; i++) {
				req_state *s = reqs[i].priv;
				if (!s)
					continue;
				reqs[i].result = -ECANCELED;
				reqs[i].priv = NULL;
				req_state_free(s);
			}
			return r;
		}
		if (still > 0)
			(void) curl_multi_poll(d->multi, NULL, 0, 1000, NULL);
	}
	return r;
}

/* Whether url has the scheme, host and port of the account's URL. */
static bool same_origin(const ks_dav *d, const char *url)
{
	_cleanup_free_ char *sh = NULL;

	if (split_scheme_host(url, &sh) < 0)
		return false;
	return strcmp(sh, d->scheme_host) == 0;
}

int ks_dav_run_one(ks_dav *d, ks_dav_request *req)
{
	const char *asked = req->url;
	_cleanup_free_ char *target = NULL;
	int r;

	/* Redirects are followed here, one at a time, and only within the account's own
	 * origin: credentials never go to another host, https never turns into http, and a
	 * plain-http account on loopback is never led off the machine. */
	for (unsigned hop = 0;; hop++) {
		r = ks_dav_run(d, req, 1);
		if (r < 0 || !req->follow_redirects || !req->redirect_url)
			break;
		if (hop >= 5) {
			req->result = -ELOOP;
			set_errmsg(req, "too many redirects from %s", asked);
			break;
		}
		_cleanup_free_ char *abs = strdup(req->redirect_url);
		if (!abs)
			return -ENOMEM;
		if (!same_origin(d, abs)) {
			bool downgrade = strncasecmp(d->base_url, "https:", 6) == 0 &&
					 strncasecmp(req->redirect_url, "http:", 5) == 0;
			req->result = -EPERM;
			set_errmsg(req, downgrade ? "refusing to follow a redirect from https to plain "
						    "http (%.200s)"
						  : "the server redirects to another host (%.200s); "
						    "if you trust it, set url to it", req->redirect_url);
			break;
		}
		free(target);
		target = TAKE_PTR(abs);
		ks_dav_request_done(req);
		req->url = target;
	}
	req->url = asked;
	return r < 0 ? r : req->result;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static bool keep_plain(unsigned char c)
{
	return isalnum(c) || strchr("-._~!$&'()*+,;=:@/", c);
}

int ks_href_normalize(const char *base_url, const char *href, char **ret)
{
	ks_buf b = { .max = KS_XML_MAX_TEXT };
	const char *p = href;
	int r = 0;

	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (strncasecmp(p, "http://", 7) == 0 || strncasecmp(p, "https://", 8) == 0) {
		/* An absolute URL must point at the account's own server. */
		_cleanup_free_ char *sh = NULL, *bsh = NULL;
		r = split_scheme_host(p, &sh);
		if (r < 0)
			return r;
		if (base_url) {
			r = split_scheme_host(base_url, &bsh);
			if (r < 0)
				return r;
			if (strcmp(sh, bsh) != 0)
				return -EINVAL;
		}
		p += strlen(sh);
	}
	if (*p != '/')
		return -EINVAL;
	size_t end = strcspn(p, "?#");
	while (end > 0 && strchr(" \t\r\n", p[end - 1]))
		end--;
	for (size_t i = 0; i < end && r >= 0; i++) {
		unsigned char c = (unsigned char) p[i];
		if (c == '%') {
			if (i + 2 >= end || hexval(p[i + 1]) < 0 || hexval(p[i + 2]) < 0)
				return ks_buf_done(&b), -EINVAL;
			c = (unsigned char) (hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
			i += 2;
			if (c == 0)
				return ks_buf_done(&b), -EINVAL;
			if (c == '/' || c == '%' || !keep_plain(c)) {
				r = ks_buf_printf(&b, "%%%02X", c);
				continue;
			}
		} else if (!keep_plain(c) && c < 0x80) {
			r = ks_buf_printf(&b, "%%%02X", c);
			continue;
		} else if (c >= 0x80) {
			r = ks_buf_printf(&b, "%%%02X", c);
			continue;
		}
		char ch = (char) c;
		r = ks_buf_append(&b, &ch, 1);
	}
	if (r < 0) {
		ks_buf_done(&b);
		return r;
	}
	/* Collapse "//" and refuse dot segments: hrefs become file and directory names. */
	char *s = b.data ? b.data : NULL;
	if (!s) {
		ks_buf_done(&b);
		return -EINVAL;
	}
	char *w = s;
	for (char *q = s; *q; q++) {
		if (*q == '/' && w > s && w[-1] == '/')
			continue;
		*w++ = *q;
	}
	*w = 0;
	for (char *seg = s; seg && *seg; seg = strchr(seg + 1, '/')) {
		const char *t = seg + 1;
		size_t l = strcspn(t, "/");
		if ((l == 1 && t[0] == '.') || (l == 2 && t[0] == '.' && t[1] == '.')) {
			ks_buf_done(&b);
			return -EINVAL;
		}
	}
	*ret = ks_buf_steal(&b);
	return *ret ? 0 : -ENOMEM;
}

int ks_href_basename(const char *href, char **ret)
{
	size_t len = strlen(href);

	while (len > 0 && href[len - 1] == '/')
		len--;
	size_t start = len;
	while (start > 0 && href[start - 1] != '/')
		start--;
	if (start == len)
		return -EINVAL;
	char *out = malloc(len - start + 1);
	if (!out)
		return -ENOMEM;
	size_t o = 0;
	for (size_t i = start; i < len; i++) {
		if (href[i] == '%' && i + 2 < len && hexval(href[i + 1]) >= 0 && hexval(href[i + 2]) >= 0) {
			out[o++] = (char) (hexval(href[i + 1]) * 16 + hexval(href[i + 2]));
			i += 2;
		} else
			out[o++] = href[i];
	}
	out[o] = 0;
	*ret = out;
	return 0;
}
