package kafkax

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/segmentio/kafka-go"
)

// DefaultPartnerPrefix is where partner systems and connectors' own credentials produce and
// consume in the shipped deployments.
const DefaultPartnerPrefix = "partner."

// RoleACLs are the topic and group ACLs a cluster with an authorizer needs for flowd, in
// Kafka's terms (what deployments/ grants with kafka-acls):
//
//   - flowdUser (every flowd role) may do anything on topics under the topic prefix and on
//     consumer groups named after it (Config.Group), and read and describe partner topics
//     (flows with a trigger.kafka consume them under a flowd group, and report their
//     replication);
//   - connectorUser (the credentials given to connectors and partner systems) may read, write,
//     describe and create partner topics and use groups under partnerPrefix, and nothing under
//     flowd's prefix: a connector cannot read or forge flowd's records.
func (c Config) RoleACLs(flowdUser, connectorUser, partnerPrefix string) []kafka.ACLEntry {
	c = c.withDefaults()
	prefix := c.TopicPrefix
	group := strings.TrimRight(prefix, ".-_")
	allow := func(user string, rt kafka.ResourceType, name string, op kafka.ACLOperationType) kafka.ACLEntry {
		return kafka.ACLEntry{
			ResourceType: rt, ResourceName: name, ResourcePatternType: kafka.PatternTypePrefixed,
			Principal: "User:" + user, Host: "*", Operation: op, PermissionType: kafka.ACLPermissionTypeAllow,
		}
	}
	acls := []kafka.ACLEntry{
		allow(flowdUser, kafka.ResourceTypeTopic, prefix, kafka.ACLOperationTypeAll),
		allow(flowdUser, kafka.ResourceTypeGroup, group, kafka.ACLOperationTypeAll),
	}
	if partnerPrefix != "" {
		acls = append(acls,
			allow(flowdUser, kafka.ResourceTypeTopic, partnerPrefix, kafka.ACLOperationTypeRead),
			allow(flowdUser, kafka.ResourceTypeTopic, partnerPrefix, kafka.ACLOperationTypeDescribe),
			// min.insync.replicas of partner topics, for the flows' trigger status.
			allow(flowdUser, kafka.ResourceTypeTopic, partnerPrefix, kafka.ACLOperationTypeDescribeConfigs),
		)
		if connectorUser != "" {
			for _, op := range []kafka.ACLOperationType{
				kafka.ACLOperationTypeRead, kafka.ACLOperationTypeWrite, kafka.ACLOperationTypeDescribe, kafka.ACLOperationTypeCreate,
			} {
				acls = append(acls, allow(connectorUser, kafka.ResourceTypeTopic, partnerPrefix, op))
			}
			acls = append(acls, allow(connectorUser, kafka.ResourceTypeGroup, partnerPrefix, kafka.ACLOperationTypeRead))
		}
	}
	return acls
}

// CreateACLs grants acls on the cluster c points at; c must authenticate as a principal
// allowed to alter ACLs (a super user). An ACL that exists already is not an error.
func CreateACLs(ctx context.Context, c Config, acls []kafka.ACLEntry) error {
	cl, closeFn, err := client(c, 0, []string{})
	if err != nil {
		return err
	}
	defer closeFn()
	res, err := cl.CreateACLs(ctx, &kafka.CreateACLsRequest{ACLs: acls})
	if err != nil {
		return fmt.Errorf("kafkax: create acls: %w", err)
	}
	var errs []error
	for i, e := range res.Errors {
		if e != nil {
			errs = append(errs, fmt.Errorf("kafkax: acl %s %v on %s: %w", acls[i].Principal, acls[i].Operation, acls[i].ResourceName, e))
		}
	}
	return errors.Join(errs...)
}
