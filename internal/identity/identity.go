// Package identity holds who may do what: tenants, users, API tokens and permissions. It is pure
// logic; internal/store persists these records.
package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"
	"time"
)

// Permission names follow the Open Integration Hub / FlowMate seeds.
const (
	PermAll             = "all" // the administrator: every permission in every tenant
	PermFlowsRead       = "flows.read"
	PermFlowsUpdate     = "flows.update" // create and change flows
	PermFlowsDelete     = "flows.delete"
	PermFlowsControl    = "flows.control" // start and stop
	PermSecretsCreate   = "secrets.create"
	PermSecretsRead     = "secrets.read"
	PermSecretsDelete   = "secrets.delete"
	PermTemplatesRead   = "templates.read"
	PermComponentsRead  = "components.read"
	PermComponentsWrite = "components.write"
	PermUsersRead       = "users.read"  // list users of the own tenant
	PermUsersWrite      = "users.write" // create users and tokens in the own tenant
	PermTenantFlowsRead = "tenant.flows.read"
	PermTenantFlowsUpd  = "tenant.flows.update"
	PermIcenterRead     = "icenter.read"
	PermIcenterWrite    = "icenter.write"
	PermAuditRead       = "audit.read" // read the own tenant's audit log
)

// Known lists every permission a user may be granted.
var Known = []string{
	PermAll, PermFlowsRead, PermFlowsUpdate, PermFlowsDelete, PermFlowsControl,
	PermSecretsCreate, PermSecretsRead, PermSecretsDelete, PermTemplatesRead,
	PermComponentsRead, PermComponentsWrite, PermUsersRead, PermUsersWrite,
	PermTenantFlowsRead, PermTenantFlowsUpd, PermIcenterRead, PermIcenterWrite, PermAuditRead,
}

// DefaultPermissions are granted to a user created without an explicit list.
var DefaultPermissions = []string{
	PermFlowsRead, PermFlowsUpdate, PermFlowsDelete, PermFlowsControl,
	PermSecretsCreate, PermSecretsRead, PermSecretsDelete, PermTemplatesRead, PermComponentsRead,
}

// IsKnown reports whether p is a permission flowd understands.
func IsKnown(p string) bool { return slices.Contains(Known, p) }

// Tenant is an organisation; its users share tenant-owned flows.
type Tenant struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	// PartnerTopics, set by an administrator, are the Kafka topics the tenant's flows may read
	// and write: exact names, or prefixes ending in '*' ("acme.*"). Nil leaves the tenant
	// unrestricted unless the deployment restricts every tenant; an empty list allows none.
	PartnerTopics *[]string `json:"partnerTopics,omitempty"`
	CreatedAt     time.Time `json:"createdAt"`
	UpdatedAt     time.Time `json:"updatedAt"`
}

// AllowsTopic reports whether the tenant's flows may use topic. restricted is the deployment's
// setting for tenants without a list of their own: true allows them none.
func (t Tenant) AllowsTopic(topic string, restricted bool) bool {
	if t.PartnerTopics == nil {
		return !restricted
	}
	for _, p := range *t.PartnerTopics {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(topic, prefix) || p == topic {
			return true
		}
	}
	return false
}

// User has an internal ID (used by the API) distinct from its external Username (the partner
// system's identifier), as in the FlowMate partner API.
type User struct {
	ID          string    `json:"id"`
	Username    string    `json:"username"`
	Status      string    `json:"status"`
	Confirmed   bool      `json:"confirmed"`
	CanLogin    bool      `json:"canLogin"`
	Tenant      string    `json:"tenant,omitempty"`
	Roles       []string  `json:"roles"`
	Permissions []string  `json:"permissions"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// UserActive is the status of a user that may act.
const UserActive = "ACTIVE"

// Token is an API token. The secret itself is never stored: only its SHA-256.
type Token struct {
	ID        string     `json:"id"`
	UserID    string     `json:"userId"`
	Name      string     `json:"name,omitempty"`
	Hash      string     `json:"hash,omitempty"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	CreatedAt time.Time  `json:"createdAt"`
}

// Expired reports whether the token may no longer be used at now.
func (t Token) Expired(now time.Time) bool { return t.ExpiresAt != nil && !now.Before(*t.ExpiresAt) }

// Principal is the authenticated caller of a request.
type Principal struct {
	User    User
	TokenID string
}

// IsAdmin reports whether the caller holds `all`.
func (p Principal) IsAdmin() bool { return slices.Contains(p.User.Permissions, PermAll) }

// Can reports whether the caller holds perm (admins hold every permission).
func (p Principal) Can(perm string) bool {
	return p.IsAdmin() || slices.Contains(p.User.Permissions, perm)
}

// NewID returns a 24-hex-digit identifier, the shape FlowMate clients already handle.
func NewID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// TokenPrefix marks flowd tokens so secret scanners and people recognise them.
const TokenPrefix = "fld_"

// NewToken returns a fresh secret token; only HashToken(secret) is ever stored.
func NewToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// HashToken is the lookup key of a token. Lookups go by hash, so no secret comparison happens
// in application code at all.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(strings.TrimSpace(secret)))
	return hex.EncodeToString(sum[:])
}
