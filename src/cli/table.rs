//! Column alignment in the manner of Go's `text/tabwriter`, which kubectl
//! uses for every table.

/// Alignment of a column's cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text starts at the column's left edge.
    Left,
    /// Text ends at the column's right edge (numbers).
    Right,
}

/// A table of text cells, rendered with aligned columns.
#[derive(Clone, Debug, Default)]
pub(crate) struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

/// Spacing of `kubectl get`: at least 3 spaces between columns, cells at
/// least 6 wide including the spacing.
pub(crate) const GET_STYLE: Style = Style { padding: 3, min_width: 6 };

/// Spacing of `kubectl describe`: 2 spaces between columns.
pub(crate) const DESCRIBE_STYLE: Style = Style { padding: 2, min_width: 0 };

/// How much room a column gets beyond its widest cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Style {
    /// Spaces after the widest cell of a column.
    pub padding: usize,
    /// Minimal width of a column, padding included.
    pub min_width: usize,
}

impl Table {
    /// A table with these column headers, all left-aligned.
    pub(crate) fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        let headers: Vec<String> = headers.into_iter().map(Into::into).collect();
        let align = vec![Align::Left; headers.len()];
        Table { headers, align, rows: Vec::new() }
    }

    /// Sets the alignment of one column.
    pub(crate) fn align(mut self, column: usize, align: Align) -> Table {
        if let Some(a) = self.align.get_mut(column) {
            *a = align;
        }
        self
    }

    /// Adds a row. Missing cells are empty, extra cells are dropped.
    pub(crate) fn push(&mut self, mut row: Vec<String>) {
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// The table as text: the header line, then one line per row, each
    /// ending in `\n`, with `indent` before every line. The last column is
    /// not padded, and no line has trailing spaces.
    pub(crate) fn render(&self, style: Style, indent: &str) -> String {
        let columns = self.headers.len();
        let mut widths = vec![0usize; columns];
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::from(indent);
            for (i, cell) in row.iter().enumerate() {
                let last = i + 1 == columns;
                let text_width = width(cell);
                let fill = widths[i] - text_width;
                if self.align[i] == Align::Right {
                    push_spaces(&mut line, fill);
                }
                line.push_str(cell);
                if !last {
                    if self.align[i] == Align::Left {
                        push_spaces(&mut line, fill);
                    }
                    let cell_width = (widths[i] + style.padding).max(style.min_width);
                    push_spaces(&mut line, cell_width - widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn push_spaces(s: &mut String, n: usize) {
    s.extend(std::iter::repeat_n(' ', n));
}

/// Display width of a cell: one column per character (the cells hold names,
/// numbers and timestamps; no attempt is made at East Asian widths).
pub(crate) fn width(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn aligns_like_kubectl_get() {
        let mut t = Table::new(["NAME", "PHASE", "SIZE", "AGE"]);
        t.push(strings(&["app-data-1", "Completed", "123", "5m"]));
        t.push(strings(&["b", "<none>", "<none>", "400d"]));
        let text = t.render(GET_STYLE, "");
        assert_eq!(
            text,
            "NAME         PHASE       SIZE     AGE\n\
             app-data-1   Completed   123      5m\n\
             b            <none>      <none>   400d\n"
        );
    }

    #[test]
    fn narrow_columns_get_the_minimum_width() {
        let mut t = Table::new(["A", "B"]);
        t.push(strings(&["x", "y"]));
        assert_eq!(t.render(GET_STYLE, ""), "A     B\nx     y\n");
    }

    #[test]
    fn right_alignment_indent_and_no_trailing_spaces() {
        let mut t = Table::new(["SIZE", "NAME", "NOTE"]).align(0, Align::Right);
        t.push(strings(&["5", "a", ""]));
        t.push(strings(&["12345", "bb"]));
        let text = t.render(DESCRIBE_STYLE, "  ");
        assert_eq!(text, "   SIZE  NAME  NOTE\n      5  a\n  12345  bb\n");
    }

    #[test]
    fn non_ascii_is_counted_by_characters() {
        let mut t = Table::new(["NAME", "X"]);
        t.push(strings(&["café", "1"]));
        assert_eq!(t.render(GET_STYLE, ""), "NAME   X\ncafé   1\n");
    }
}
