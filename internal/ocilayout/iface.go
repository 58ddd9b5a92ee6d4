package ocilayout

var (
	_ Reader = (*Layout)(nil)
	_ Reader = (*Archive)(nil)
)
