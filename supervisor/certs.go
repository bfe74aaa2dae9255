package supervisor

import (
	"fmt"
	"time"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// certSource lists the certificates this host presents (member.Certs).
type certSource func() ([]pki.CertFileInfo, error)

// certsStatus summarizes certs (and the error reading them) at now: the
// earliest to expire, with a warning once now is past its pki.WarnAt (or
// it expired), and what the warning is about (warnKey: the certificate and
// whether it expired), so it is logged once. Nil for no certificates and
// no error.
func certsStatus(certs []pki.CertFileInfo, err error, now time.Time) (st *api.CertsStatus, warnKey string) {
	if len(certs) == 0 && err == nil {
		return nil, ""
	}
	st = &api.CertsStatus{Count: len(certs)}
	if err != nil {
		st.Error = err.Error()
	}
	var first *pki.CertFileInfo
	for i := range certs {
		if first == nil || certs[i].NotAfter.Before(first.NotAfter) {
			first = &certs[i]
		}
	}
	if first == nil {
		return st, ""
	}
	st.EarliestExpiry, st.Path, st.CommonName, st.Serial = first.NotAfter, first.Path, first.CommonName, first.Serial
	var warn *pki.CertFileInfo // the earliest to expire of those past WarnAt
	for i, c := range certs {
		if !now.Before(c.WarnAt()) && (warn == nil || c.NotAfter.Before(warn.NotAfter)) {
			warn = &certs[i]
		}
	}
	if warn != nil {
		warnKey = warn.Path + " " + warn.Serial + " " + fmt.Sprint(!now.Before(warn.NotAfter))
	}
	switch {
	case warn == nil:
	case !now.Before(warn.NotAfter):
		st.Warning = fmt.Sprintf("certificate %s (%s) expired at %s: renew it (see README, Certificates)",
			warn.Path, warn.CommonName, warn.NotAfter.UTC().Format(time.RFC3339))
	default:
		st.Warning = fmt.Sprintf("certificate %s (%s) expires at %s, in %s, and was not renewed (see the log)",
			warn.Path, warn.CommonName, warn.NotAfter.UTC().Format(time.RFC3339), warn.NotAfter.Sub(now).Round(time.Second))
	}
	return st, warnKey
}

// connectCerts shows this host's certificates.
func (h *hostStatus) connectCerts(src certSource) {
	h.mu.Lock()
	h.src.certs = src
	h.mu.Unlock()
}

// certs summarizes this host's certificates now, or nil before they are
// connected.
func (h *hostStatus) certs() (*api.CertsStatus, string) {
	src := h.sources().certs
	if src == nil {
		return nil, ""
	}
	certs, err := src()
	return certsStatus(certs, err, time.Now())
}

// checkCerts logs a certificate that nears its expiry without having
// been renewed, once per warning.
func (h *hostStatus) checkCerts() {
	st, key := h.certs()
	if st == nil || st.Warning == "" {
		return
	}
	h.mu.Lock()
	seen := h.certWarned == key
	h.certWarned = key
	h.mu.Unlock()
	if !seen {
		h.log.Warn(st.Warning)
	}
}

// earliestCertExpiry is the metric m3sup_cert_earliest_expiry_timestamp_seconds.
func (h *hostStatus) earliestCertExpiry() float64 {
	st, _ := h.certs()
	if st == nil || st.EarliestExpiry.IsZero() {
		return 0
	}
	return float64(st.EarliestExpiry.UnixNano()) / 1e9
}

// certsRenewed is told of each renewal: a warning after it is logged again.
func (h *hostStatus) certsRenewed() {
	h.mu.Lock()
	h.certWarned = ""
	h.mu.Unlock()
}
