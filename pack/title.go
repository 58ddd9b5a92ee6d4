package pack

import "strings"

// Title is the org.opencontainers.image.title annotation pack gives a
// layer: the model-relative names of its files, comma-separated. A "," or
// "%" inside a name is written %2C or %25, so that a name with a comma
// reads back as one name; a title without either (every title written
// before this encoding, unless a name held one) reads as it always did.
func Title(files []string) string {
	esc := make([]string, len(files))
	for i, f := range files {
		esc[i] = titleEscaper.Replace(f)
	}
	return strings.Join(esc, ",")
}

var titleEscaper = strings.NewReplacer("%", "%25", ",", "%2C")

// TitleFiles reads the file names of a title annotation written by Title
// (or by an older pack, which joined names with commas as they were).
// A "%" that starts neither %2C nor %25 is kept as it is.
func TitleFiles(title string) []string {
	if title == "" {
		return nil
	}
	parts := strings.Split(title, ",")
	for i, p := range parts {
		if strings.Contains(p, "%") {
			parts[i] = titleUnescaper.Replace(p)
		}
	}
	return parts
}

var titleUnescaper = strings.NewReplacer("%25", "%", "%2C", ",", "%2c", ",")
